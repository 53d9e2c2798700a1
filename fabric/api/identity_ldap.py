"""Users and groups of one domain read from LDAP, as Keystone's LDAP identity driver:
read-only, passwords checked by binding as the user, role assignments kept in SQL.

Each LDAP user and group has a *shadow* row in the database (``users``,
``identity_groups``) with an id derived from its LDAP id, so tokens, grants and
application credentials refer to it like to any other; the directory is the truth
for names and memberships, copied into the shadows when a user signs in (its own
entry and groups, as Keystone refreshes a federated user's groups at each login) and
when users or groups are listed (the whole directory). A shadow whose entry left the
directory is deleted with its grants. Nothing is ever written to LDAP: creating,
changing or deleting users, groups or memberships of the LDAP domain is refused (403).

Uses ldap3 (pure Python, so its sockets are green under eventlet), imported only when
``[ldap] url`` is set.
"""

from __future__ import annotations

import dataclasses
import uuid

import sqlalchemy as sa

from fabric import config, exception
from fabric.api import identity_grants
from fabric.db.models import Domain, Group, GroupMembership, User

#: Namespace of the shadow ids (uuid5 of "<kind>:<domain>:<LDAP id>").
_NAMESPACE = uuid.UUID("6f1c54b2-3f0e-4c5e-9a84-5d2f0b8b7a41")


class DirectoryUnavailable(exception.FabricError):
    code = 503
    msg_fmt = "The LDAP directory at {url} cannot be used right now: {reason}"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One LDAP user or group: its id and name attributes and its DN."""

    ldap_id: str
    name: str
    dn: str


def shadow_id(kind: str, domain_id: str, ldap_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{domain_id}:{ldap_id}"))


def read_only(domain_id: str, what: str) -> exception.Forbidden:
    return exception.Forbidden(reason=f"domain {domain_id!r} takes its users and groups from LDAP, which fabric "
                                      f"only reads; {what} there is done in the directory")


class LdapDirectory:
    """The LDAP directory of ``[ldap]``, serving the domain ``[ldap] domain``."""

    def __init__(self, section: config.LdapSection) -> None:
        self.section = section
        self.domain_id = section.domain

    def _connect(self, dn: str | None = None, password: str | None = None):
        import ldap3
        from ldap3.core import exceptions as ldap_errors

        user = dn if dn is not None else (self.section.user or None)
        secret = password if dn is not None else (self.section.password or None)
        try:
            # ldap3 takes no path after the port (ldap://host:389/ fails to parse).
            server = ldap3.Server(self.section.url.rstrip("/"), connect_timeout=self.section.timeout,
                                  get_info=ldap3.NONE)
            conn = ldap3.Connection(server, user=user, password=secret, receive_timeout=max(1, round(self.section.timeout)),
                                    raise_exceptions=False, read_only=True)
            if not conn.bind():
                return conn if dn is not None else self._unbound(conn)
        except ldap_errors.LDAPException as exc:
            raise DirectoryUnavailable(url=self.section.url, reason=str(exc)) from None
        return conn

    def _unbound(self, conn):
        reason = conn.result.get("description") if conn.result else "bind refused"
        raise DirectoryUnavailable(url=self.section.url, reason=f"the search bind failed ({reason})")

    def _search(self, base: str, filter_: str, attributes: list[str]) -> list:
        from ldap3.core import exceptions as ldap_errors

        conn = self._connect()
        try:
            conn.search(base, filter_, attributes=attributes)
            return list(conn.entries)
        except ldap_errors.LDAPException as exc:
            raise DirectoryUnavailable(url=self.section.url, reason=str(exc)) from None
        finally:
            conn.unbind()

    @staticmethod
    def _first(entry, attribute: str) -> str:
        values = entry[attribute].values if attribute in entry else []
        return str(values[0]) if values else ""

    def _users(self, extra: str = "") -> list[Entry]:
        s = self.section
        found = self._search(s.user_tree_dn, f"(&(objectClass={s.user_objectclass}){extra})",
                             [s.user_id_attribute, s.user_name_attribute])
        return [Entry(self._first(e, s.user_id_attribute), self._first(e, s.user_name_attribute), e.entry_dn)
                for e in found if self._first(e, s.user_id_attribute)]

    def _groups(self, extra: str = "") -> list[tuple[Entry, list[str]]]:
        s = self.section
        found = self._search(s.group_tree_dn, f"(&(objectClass={s.group_objectclass}){extra})",
                             [s.group_id_attribute, s.group_name_attribute, s.group_member_attribute])
        groups = []
        for e in found:
            ldap_id = self._first(e, s.group_id_attribute)
            if ldap_id:
                members = [str(m).lower() for m in (e[s.group_member_attribute].values
                                                    if s.group_member_attribute in e else [])]
                groups.append((Entry(ldap_id, self._first(e, s.group_name_attribute) or ldap_id, e.entry_dn),
                               members))
        return groups

    def user_named(self, name: str) -> Entry | None:
        from ldap3.utils.conv import escape_filter_chars

        found = self._users(f"({self.section.user_name_attribute}={escape_filter_chars(name)})")
        return found[0] if len(found) == 1 else None

    def check_password(self, entry: Entry, password: str) -> bool:
        """Whether binding as ``entry`` with ``password`` succeeds (an empty password never
        does: LDAP would take it as an anonymous bind)."""
        if not password:
            return False
        conn = self._connect(entry.dn, password)
        try:
            return bool(conn.bound)
        finally:
            conn.unbind()

    # --- shadows ----------------------------------------------------------------------

    def ensure_domain(self, session) -> None:
        if session.get(Domain, self.domain_id) is None:
            session.add(Domain(id=self.domain_id, name=self.domain_id, description="Users and groups from LDAP",
                               enabled=True))
            session.flush()

    def _shadow_user(self, session, entry: Entry) -> User:
        user = session.get(User, shadow_id("user", self.domain_id, entry.ldap_id))
        if user is None:
            user = User(id=shadow_id("user", self.domain_id, entry.ldap_id), name=entry.name,
                        domain_id=self.domain_id, password_hash="", enabled=True)
            session.add(user)
        user.name = entry.name
        return user

    def _shadow_group(self, session, entry: Entry) -> Group:
        group = session.get(Group, shadow_id("group", self.domain_id, entry.ldap_id))
        if group is None:
            group = Group(id=shadow_id("group", self.domain_id, entry.ldap_id), name=entry.name,
                          domain_id=self.domain_id, description="")
            session.add(group)
        group.name = entry.name
        return group

    def _set_memberships(self, session, user_id: str, group_ids: set[str]) -> None:
        held = set(session.scalars(sa.select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)))
        for group_id in group_ids - held:
            session.add(GroupMembership(user_id=user_id, group_id=group_id))
        if held - group_ids:
            session.execute(sa.delete(GroupMembership).where(GroupMembership.user_id == user_id,
                                                             GroupMembership.group_id.in_(held - group_ids)))

    def shadow_named(self, session, name: str) -> User | None:
        """The shadow of LDAP user ``name`` (made or renamed now); None when there is none."""
        entry = self.user_named(name)
        if entry is None:
            return None
        self.ensure_domain(session)
        user = self._shadow_user(session, entry)
        session.flush()
        return user

    def sign_in(self, session, user: User, password: str) -> bool:
        """Whether ``password`` is ``user``'s (a shadow) by binding as it; when it is, the
        user's LDAP groups are copied into the database."""
        from ldap3.utils.conv import escape_filter_chars

        entry = self.user_named(user.name)
        if entry is None or shadow_id("user", self.domain_id, entry.ldap_id) != user.id:
            return False
        if not self.check_password(entry, password):
            return False
        mine = self._groups(f"({self.section.group_member_attribute}={escape_filter_chars(entry.dn)})")
        groups = {self._shadow_group(session, group).id for group, _ in mine}
        session.flush()
        self._set_memberships(session, user.id, groups)
        return True

    def sync(self, session) -> None:
        """Copy every LDAP user and group (and who is in which) into their shadows; delete the
        shadows (and their grants) of entries gone from the directory."""
        self.ensure_domain(session)
        users = {e.dn.lower(): self._shadow_user(session, e) for e in self._users()}
        groups = [(self._shadow_group(session, e), members) for e, members in self._groups()]
        session.flush()
        wanted: dict[str, set[str]] = {u.id: set() for u in users.values()}
        for group, members in groups:
            for dn in members:
                if dn in users:
                    wanted[users[dn].id].add(group.id)
        for user_id, group_ids in wanted.items():
            self._set_memberships(session, user_id, group_ids)
        keep_users, keep_groups = set(wanted), {g.id for g, _ in groups}
        for user in session.scalars(sa.select(User).where(User.domain_id == self.domain_id)).all():
            if user.id not in keep_users:
                identity_grants.delete_with_grants(session, "user", user)
        for group in session.scalars(sa.select(Group).where(Group.domain_id == self.domain_id)).all():
            if group.id not in keep_groups:
                identity_grants.delete_with_grants(session, "group", group)


def directory(settings: config.Settings) -> LdapDirectory | None:
    """The LDAP directory ``settings`` configure, or None."""
    return LdapDirectory(settings.ldap) if settings.ldap.url else None


def sync_quietly(db, settings: config.Settings) -> None:
    """Copy the directory into its shadows (:meth:`LdapDirectory.sync`) when LDAP is
    configured; a concurrent request doing the same first is no error."""
    found = directory(settings)
    if found is None:
        return
    try:
        with db.begin() as session:
            found.sync(session)
    except sa.exc.IntegrityError:
        pass  # another request made the same shadows a moment ago


def shadow_quietly(db, found: LdapDirectory, name: str) -> None:
    """Make sure LDAP user ``name`` has its shadow before it signs in (in a transaction of
    its own, so a wrong password still has a row to be counted against)."""
    try:
        with db.begin() as session:
            found.shadow_named(session, name)
    except sa.exc.IntegrityError:
        pass


def refuse_writes(settings: config.Settings, domain_id: str | None, what: str) -> None:
    """Forbidden when ``domain_id`` is the LDAP domain: fabric never writes to the directory."""
    found = directory(settings)
    if found is not None and domain_id == found.domain_id:
        raise read_only(domain_id, what)
