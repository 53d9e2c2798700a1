"""The broker as an operator sees it: queue depths, consumers and dead letters, and
moving dead letters back onto their queue.

Listing goes through ``rabbitmqctl`` (it sees every queue of a vhost, which
AMQP cannot list); requeueing goes through AMQP with publisher confirms. Both
``fabric-manage queues`` and the admin API's ``/fabric/v1/queues`` use this
module, so the two always show and do the same thing (but for re-signing: the
command passes its host's keyring, the API none, so the API moves dead letters
back unchanged).

Requeueing and signatures: a dead letter keeps the signed bytes it arrived with, and
a signature older than ``[signing] max_age`` is refused as stale, so a dead letter (or
a backlog) older than that would only die again. Given the keyring of the host it
runs on, :func:`requeue_dead` checks each dead letter's signature (whatever its age)
and re-signs the ones that check with a fresh timestamp, as their original signer
and for their original role, when that host holds the signer's key (the key host
holds every role's). It never re-signs what does not check: unsigned, forged,
unknown-key and malformed ones stay dead, and so does a stale one it cannot re-sign;
the result says how many and why.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import subprocess
from collections.abc import Sequence

import amqp
import kombu

from fabric import config
from fabric.cmd.workers import WORKERS
from fabric.exception import Invalid, MessagingError, NotFound
from fabric.rpc import signing
from fabric.rpc.transport import ATTEMPT_HEADER, DEAD_REASON_HEADER

#: Seconds one rabbitmqctl invocation may take.
RABBITMQCTL_TIMEOUT = 60

#: A durable queue's dead letters live in ``<queue>.dead`` (bound to the
#: ``fabric.dlx`` exchange by fabric.rpc).
DEAD_SUFFIX = ".dead"

#: Headers recording a failed past (fabric.rpc's dead reason and attempt count,
#: a quorum queue's delivery count); cleared on requeue so the message gets its
#: full delivery budget again.
RESET_HEADERS = frozenset({DEAD_REASON_HEADER, ATTEMPT_HEADER, "x-fabric-queue", "x-delivery-count"})


@dataclasses.dataclass(frozen=True)
class QueueRow:
    """One live queue: its worker type, depth, consumers and dead letters (None: no dead-letter queue)."""

    worker: str
    name: str
    ready: int
    unacked: int
    consumers: int
    dead: int | None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def amqp_url(settings: config.Settings) -> str:
    """``[rpc] transport_url`` when it names RabbitMQ; Invalid otherwise (queues need a broker)."""
    url = settings.rpc.transport_url
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        raise Invalid(reason=f"[rpc] transport_url is {url!r}: queue commands need a RabbitMQ "
                             "transport (amqp://user:pass@host:5672/vhost)")
    return url


def vhost_of(url: str) -> str:
    """The vhost a kombu URL names (``/`` when it names none)."""
    with kombu.Connection(url) as connection:
        return connection.virtual_host or "/"


def with_vhost(url: str, vhost: str) -> str:
    """``url`` pointing at ``vhost`` instead of its own."""
    return kombu.Connection(url).clone(virtual_host=vhost).as_uri(include_password=True)


@dataclasses.dataclass(frozen=True)
class Rabbitmqctl:
    """How to run ``rabbitmqctl``: the program and the node (``-n``) it talks to."""

    program: str = "rabbitmqctl"
    node: str | None = None

    def run(self, *command: str) -> list[dict]:
        """Run ``rabbitmqctl COMMAND --formatter json`` and parse its rows.

        Raises MessagingError naming the command and rabbitmqctl's complaint.
        """
        argv = [self.program, "-q"]
        if self.node:
            argv += ["-n", self.node]
        argv += [*command, "--formatter", "json"]
        shown = " ".join(argv)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False)
        except FileNotFoundError:
            raise MessagingError(reason=f"{self.program} is not installed or not on PATH "
                                        "(use --rabbitmqctl to name it)") from None
        except subprocess.TimeoutExpired:
            raise MessagingError(reason=f"`{shown}` did not answer within {RABBITMQCTL_TIMEOUT}s") from None
        if done.returncode != 0:
            complaint = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
            raise MessagingError(reason=f"`{shown}` failed (exit {done.returncode}): {complaint}")
        try:
            return json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            raise MessagingError(reason=f"`{shown}` printed something that is not JSON: "
                                        f"{done.stdout.strip()[:200]!r}") from None


def worker_type(queue: str) -> str:
    """The worker a queue belongs to (``fabric-compute`` for ``compute.host1``), else ``other``."""
    topic = queue.split(".", 1)[0]
    topic = topic.split("_fanout", 1)[0]
    for spec in WORKERS.values():
        if spec.topic == topic:
            return spec.binary
    return "other"


def queue_rows(queues: Sequence[dict]) -> list[QueueRow]:
    """One row per live queue, its ``<queue>.dead`` folded in as its dead letters; fabric's
    workers first (by worker, then name), other queues last."""
    by_name = {q["name"]: q for q in queues}
    rows = []
    for name, queue in by_name.items():
        if name.endswith(DEAD_SUFFIX) and name[: -len(DEAD_SUFFIX)] in by_name:
            continue  # shown as its live queue's dead letters
        dead = by_name.get(name + DEAD_SUFFIX)
        rows.append(QueueRow(worker_type(name), name, queue.get("messages_ready", 0),
                             queue.get("messages_unacknowledged", 0), queue.get("consumers", 0),
                             dead.get("messages", 0) if dead else None))
    rows.sort(key=lambda row: (row.worker == "other", row.worker, row.name))
    return rows


def list_queues(ctl: Rabbitmqctl, vhost: str) -> list[QueueRow]:
    """The queues of ``vhost`` as rows; NotFound when the vhost does not exist."""
    queues = ctl.run("list_queues", "-p", vhost, "name", "messages", "messages_ready",
                     "messages_unacknowledged", "consumers")
    if not queues:
        # rabbitmqctl lists a missing vhost as empty: tell the two apart.
        vhosts = {row["name"] for row in ctl.run("list_vhosts", "name")}
        if vhost not in vhosts:
            raise NotFound(kind="RabbitMQ vhost", ident=repr(vhost))
    return queue_rows(queues)


def live_queue(name: str) -> str:
    """The live queue a name means: ``compute`` for ``compute`` and for ``compute.dead``."""
    return name[: -len(DEAD_SUFFIX)] if name.endswith(DEAD_SUFFIX) else name


def is_death_header(key: str) -> bool:
    """Headers recording a past death; dropped so the message starts afresh."""
    return key.startswith(("x-death", "x-first-death", "x-last-death")) or key in RESET_HEADERS


@dataclasses.dataclass
class Requeued:
    """What one requeue did: messages moved back (``resigned`` of them re-signed) and the
    dead letters left where they were, by refusal code, with the first reason of each."""

    moved: int = 0
    resigned: int = 0
    left: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    why: dict[str, str] = dataclasses.field(default_factory=dict)

    def leave(self, refused: signing.Refused) -> None:
        self.left[refused.code] += 1
        self.why.setdefault(refused.code, refused.reason)


def requeue_copy(keyring: signing.Keyring, queue: str, body: bytes) -> tuple[bytes, bool]:
    """(the bytes to put a dead letter of ``queue`` back as, whether they were re-signed).

    The signature is checked whatever its age; one that checks is renewed (same signer
    and role, the signer's newest key, the time now) when ``keyring`` holds the signer's
    key, else the bytes are kept as they are while still within ``max_age``. Raises
    :class:`~fabric.rpc.signing.Refused` for a dead letter that must stay dead: unsigned,
    malformed, unknown-key, forged, signed for a role other than ``queue``'s, or stale
    with no key here to re-sign it.
    """
    ageless = copy.copy(keyring)
    ageless.max_age = math.inf  # an old but genuine signature is what requeueing is for
    signer, verifier, _, envelope = ageless.check(signing.REQUEST, body)
    if queue != verifier and not queue.startswith(verifier + "."):
        raise signing.Refused("wrong-destination", f"signed by {signer} for {verifier}, dead-lettered from {queue}")
    if keyring.masters.get(signer):
        return keyring.sign(signing.REQUEST, envelope, signer, verifier), True
    try:
        keyring.check(signing.REQUEST, body, verifier)
    except signing.Refused as refused:
        raise signing.Refused(refused.code, f"{refused.reason}; the keys in {keyring.source} cannot re-sign "
                                            f"as {signer} (run this where {signer}.key is, e.g. the key host)") from None
    return body, False


def requeue_dead(url: str, queue: str, *, limit: int | None = None,
                 keyring: signing.Keyring | None = None) -> Requeued:
    """Move up to ``limit`` messages from ``<queue>.dead`` back to ``queue``.

    With an enabled ``keyring`` (the keys of the host this runs on), each dead letter goes
    back as :func:`requeue_copy` says, or stays dead (counted in ``left`` with its reason);
    without one, every dead letter goes back with its bytes unchanged (a receiver checks it
    again). Each message keeps its properties (minus the headers recording its death), is
    published persistent with a publisher confirm straight to ``queue``, and only then
    removed from the dead-letter queue: a crash midway duplicates at most one message,
    never loses one. Messages that die again while this runs are not moved twice in one
    run. Raises NotFound when either queue does not exist, Invalid for a negative limit,
    MessagingError when the broker cannot be reached or refuses a copy.
    """
    if limit is not None and limit < 0:
        raise Invalid(reason=f"limit is {limit}; use a number of messages, 0 or more")
    checking = keyring is not None and keyring.enabled
    dead_queue = queue + DEAD_SUFFIX
    done = Requeued()
    # confirm_publish: basic_publish then waits for the broker's ack (and raises on a
    # nack or a return), so a dead letter is removed only once its copy is safe.
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as connection:
        try:
            connection.connect()
        except (OSError, *connection.connection_errors) as exc:
            raise MessagingError(reason=f"cannot reach the broker at {connection.as_uri()}: {exc}") from None
        for name in (queue, dead_queue):
            probe = connection.channel()
            try:
                probe.queue_declare(name, passive=True)
            except connection.channel_errors:
                raise NotFound(kind="Queue", ident=f"{name} in vhost {connection.virtual_host}") from None
            finally:
                if probe.is_open:
                    probe.close()
        channel = connection.channel()
        _, waiting, _ = channel.queue_declare(dead_queue, passive=True)
        budget = waiting if limit is None else min(limit, waiting)
        # Each dead letter is taken at most once: those left stay unacknowledged (so they
        # are not taken again) until the channel closes, which puts them back in place.
        for _ in range(waiting):
            if done.moved >= budget:
                break
            message = channel.basic_get(dead_queue, no_ack=False)
            if message is None:
                break
            body, resigned = message.body, False
            if checking:
                try:
                    body, resigned = requeue_copy(keyring, queue, message.body)
                except signing.Refused as refused:
                    done.leave(refused)
                    continue
            properties = dict(message.properties)
            headers = {k: v for k, v in (properties.get("application_headers") or {}).items()
                       if not is_death_header(k)}
            properties["application_headers"] = headers
            properties["delivery_mode"] = 2
            # Straight to the queue through the default exchange: it reaches
            # `queue` whatever the topic bindings are.
            try:
                channel.basic_publish(amqp.Message(body, **properties), exchange="",
                                      routing_key=queue, mandatory=True)
            except (amqp.exceptions.MessageNacked, *connection.connection_errors,
                    *connection.channel_errors) as exc:
                # Unacked, the dead letter goes back to QUEUE.dead when the channel closes.
                raise MessagingError(reason=f"the broker did not take a copy for {queue} ({exc}); "
                                            f"{done.moved} message(s) moved, the rest are still in "
                                            f"{dead_queue}") from None
            channel.basic_ack(message.delivery_tag)
            done.moved += 1
            done.resigned += resigned
        channel.close()
    return done
