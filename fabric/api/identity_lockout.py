"""Password lock-out, as Keystone's ``[security_compliance] lockout_failure_attempts`` and
``lockout_duration``: after that many wrong passwords in a row a user is refused (401,
even with the right password) until ``lockout_duration`` seconds have passed since the
last failure; a right password resets the count.

Failures are counted by one atomic UPDATE each, so concurrent guesses all count and
no guesser gets more tries than the limit.
"""

from __future__ import annotations

import dataclasses
import datetime

import sqlalchemy as sa

from fabric import config, exception
from fabric.db import Database
from fabric.db.models import User
from fabric.db.types import utcnow


@dataclasses.dataclass(frozen=True)
class Policy:
    """``attempts`` wrong passwords lock a user for ``duration`` seconds; 0 attempts never lock."""

    attempts: int = 0
    duration: float = 1800.0

    @classmethod
    def from_settings(cls, settings: config.Settings) -> Policy:
        section = settings.security_compliance
        return cls(attempts=section.lockout_failure_attempts, duration=section.lockout_duration)


NEVER = Policy()


def locked_until(user: User, policy: Policy) -> datetime.datetime | None:
    """When ``user``'s lock-out ends, if it has too many recent failures."""
    if not policy.attempts or user.failed_auth_at is None or user.failed_auth_count < policy.attempts:
        return None
    return user.failed_auth_at + datetime.timedelta(seconds=policy.duration)


def require_unlocked(user: User, policy: Policy, now: datetime.datetime) -> None:
    """NotAuthenticated while ``user`` is locked out."""
    until = locked_until(user, policy)
    if until is not None and until > now:
        raise exception.NotAuthenticated(reason=f"the account is locked for user {user.id} until "
                                                f"{until.isoformat(timespec='seconds')}Z after "
                                                f"{user.failed_auth_count} wrong passwords")


def record_failure(db: Database, user_id: str, policy: Policy) -> None:
    """Count one wrong password for ``user_id`` (a count older than the lock-out restarts at 1)."""
    if not policy.attempts:
        return
    now = utcnow()
    stale = User.failed_auth_at < now - datetime.timedelta(seconds=policy.duration)
    with db.begin() as session:
        session.execute(sa.update(User).where(User.id == user_id).values(
            failed_auth_count=sa.case((sa.or_(User.failed_auth_at.is_(None), stale), 1),
                                      else_=User.failed_auth_count + 1),
            failed_auth_at=now))
