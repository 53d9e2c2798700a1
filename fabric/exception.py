"""fabric's error hierarchy.

Every error a user or a worker can cause is a :class:`FabricError`: it has a
stable ``code`` (an HTTP-like status used by the API and kept across RPC), a
message format filled from keyword fields, and those fields themselves so a
caller can act on them (``err.fields["pool"]``).

Types that are safe to rebuild on the far side of an RPC call register
themselves in :data:`REMOTE_SAFE` (every subclass defined here does, by
class name). Nothing outside that registry is ever rebuilt, and no module
named in a message is ever imported.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Error types that may be rebuilt from wire data, by class name.
REMOTE_SAFE: dict[str, type[FabricError]] = {}


class FabricError(Exception):
    """Base of every fabric error.

    Subclasses set ``msg_fmt`` (a ``str.format`` template over the keyword
    fields) and ``code``. A message given explicitly wins over the template.
    A template that cannot be filled never hides the original error: the
    message then falls back to the template plus the raw fields.
    """

    code: ClassVar[int] = 500
    msg_fmt: ClassVar[str] = "An unknown error occurred."
    #: Subclasses with ``remote_safe = False`` are not rebuilt across RPC.
    remote_safe: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("remote_safe", True):
            REMOTE_SAFE[cls.__name__] = cls

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.fields = fields
        if message is None:
            try:
                message = self.msg_fmt.format(**fields)
            except (KeyError, IndexError, ValueError):
                message = f"{self.msg_fmt} {fields!r}"
        self.message = message
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The error as wire data: type name, code, message and fields."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "fields": _jsonable(self.fields),
        }


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as JSON-safe values; anything exotic becomes its ``str``."""
    safe: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or isinstance(value, (str, int, float, bool)):
            safe[key] = value
        elif isinstance(value, (list, tuple)):
            safe[key] = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in value]
        else:
            safe[key] = str(value)
    return safe


REMOTE_SAFE["FabricError"] = FabricError


# --- client errors (4xx) -------------------------------------------------


class Invalid(FabricError):
    code = 400
    msg_fmt = "Invalid input: {reason}"


class InvalidSetting(Invalid):
    """A configuration value that cannot be used; names file, option and value."""

    msg_fmt = "{source}: [{section}] {option} = {value!r}: {reason}"


class NotAuthenticated(FabricError):
    code = 401
    msg_fmt = "Authentication required: {reason}"


class Forbidden(FabricError):
    code = 403
    msg_fmt = "Not authorized: {reason}"


class NotFound(FabricError):
    code = 404
    msg_fmt = "{kind} {ident} could not be found."


class Conflict(FabricError):
    code = 409
    msg_fmt = "Conflict: {reason}"


class NotSupported(FabricError):
    """What this deployment's driver or API does not do (HTTP 501)."""

    code = 501
    msg_fmt = "{what} is not supported: {reason}"


class InstanceStateConflict(Conflict):
    msg_fmt = (
        "Instance {instance} is in {attr} {actual!r}; expected one of {expected}."
    )


class InstanceLocked(Conflict):
    msg_fmt = "Instance {instance} is locked (by {locked_by}{reason}); only an admin may change it until it is unlocked"


class GuestNotFound(NotFound):
    """The hypervisor on this host has no guest for the instance."""

    msg_fmt = "Guest for instance {instance} is not defined on host {host}."


class GuestExists(Conflict):
    msg_fmt = "A guest for instance {instance} already exists on host {host}."


class GuestStateInvalid(Conflict):
    """The guest is not in a power state the action can start from."""

    msg_fmt = "Cannot {action} guest {instance}: it is {state}; {action} needs {accepted}."


class InvalidGuestSpec(Invalid):
    msg_fmt = "Invalid guest specification for instance {instance}: {field}={value!r}: {reason}"


class QuotaExceeded(FabricError):
    code = 413
    msg_fmt = (
        "Quota exceeded for {resource} in project {project}: requested {requested}, "
        "in use {in_use}, limit {limit}."
    )


class RequestTooLarge(FabricError):
    code = 413
    msg_fmt = "The request body ({size} bytes) is larger than the {limit} bytes accepted ([api] max_request_body)."


class RequestBodyStopped(FabricError):
    """The client stopped sending a request body before its end (a timeout, a reset, a broken
    chunked encoding): the client's fault, never the server's."""

    code = 408
    msg_fmt = "The request body stopped arriving after {received} bytes: {reason}"


class ImageTooLarge(FabricError):
    code = 413
    msg_fmt = "Image {image} is larger than the {limit} bytes accepted ([api] max_image_size)."


class AddressExhausted(Conflict):
    msg_fmt = "No free address in pool {pool} ({size} addresses, {in_use} in use)."


class AddressInUse(Conflict):
    msg_fmt = "Address {address} in pool {pool} is already allocated (request token {holder})."


class RequestTokenConflict(Conflict):
    msg_fmt = (
        "Request token {token} in pool {pool} already holds {held}; it cannot also ask for {requested}."
    )


class VolumeStateInvalid(Invalid):
    """A volume or snapshot not in a status the operation can start from (Cinder's InvalidVolume, 400)."""

    msg_fmt = "{kind} {ident} is {actual!r}; {action} needs one of {expected}."


class InvalidAddress(Invalid):
    msg_fmt = "Address {address!r} cannot be used in pool {pool}: {reason}"


class LayoutInvalid(Invalid):
    msg_fmt = "Invalid address layout: {reason}"


class NumberOutOfRange(Invalid):
    msg_fmt = "{kind} number {number!r} does not fit in {bits} {kind} bits; accepted: 0..{high}."


class NumberExhausted(Conflict):
    msg_fmt = (
        "No free {kind} number in {scope}: {bits} {kind} bits allow {capacity} "
        "(0..{high}) and all are in use."
    )


# --- infrastructure errors (5xx) ------------------------------------------


class DatabaseUnavailable(FabricError):
    code = 503
    msg_fmt = "Database {url} is unreachable: {reason}"


class DatabaseNotSynced(FabricError):
    code = 503
    msg_fmt = "Database {url} has no fabric schema yet: run `fabric-manage db sync` first."


class NoValidHost(FabricError):
    code = 500
    msg_fmt = "No valid host was found: {reason}"


class BuildAttemptsExhausted(NoValidHost):
    msg_fmt = (
        "Build of instance {instance} failed on {attempts} host(s) ({hosts}); "
        "[scheduler] max_attempts is {max_attempts}. Last error: {reason}"
    )


class HypervisorError(FabricError):
    """A virt driver operation failed on the hypervisor."""

    code = 500
    msg_fmt = "Hypervisor on host {host} failed to {action} instance {instance}: {reason}"


class VolumeBackendError(FabricError):
    """The volume host's storage or export tools failed."""

    code = 500
    msg_fmt = "Volume host {host} failed to {action} {ident}: {reason}"


class HypervisorUnavailable(FabricError):
    code = 503
    msg_fmt = "Hypervisor at {uri} is unreachable: {reason}"


class ObjectstoreError(FabricError):
    """The objectstore refused a request of fabric's own, or could not be reached."""

    code = 502
    msg_fmt = "Objectstore {url} answered {request} with {status} {code}: {reason}"


class ImageDataCorrupt(FabricError):
    """An image's bytes as downloaded are not the bytes the Image API recorded."""

    code = 502
    msg_fmt = "image {image}: {reason}"


class MessagingError(FabricError):
    code = 503
    msg_fmt = "Messaging failure: {reason}"


class MessagingTimeout(MessagingError):
    code = 504
    msg_fmt = (
        "Timed out after {timeout}s waiting for a reply from {target} to {method} "
        "(message {msg_id})."
    )


class Unroutable(MessagingError):
    msg_fmt = "No worker consumes {target}: the message to {method} was not routed."


class KernelError(FabricError):
    """A kernel operation (netlink, sysctl, nft, dnsmasq) failed on a host."""

    code = 500
    msg_fmt = "Kernel operation {op} on {target} failed: [errno {errno}] {reason}"


class NamespaceNotFound(NotFound):
    msg_fmt = "Network namespace {netns!r} does not exist (expected a name under /run/netns)."


class NetworkTypeUnsupported(Invalid):
    msg_fmt = "Network type {network_type!r} cannot be set up on this host: {reason}"


class RemoteError(FabricError):
    """A remote failure whose type is not registered as safe to rebuild.

    Carries the remote type name, message and formatted traceback as text.
    """

    code = 500
    remote_safe = False
    msg_fmt = "Remote error: {exc_type} {value}"

    def __init__(self, exc_type: str, value: str, traceback: str = "") -> None:
        super().__init__(exc_type=exc_type, value=value)
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback


def rebuild(data: dict[str, Any], traceback: str = "") -> FabricError:
    """Rebuild an error from wire data.

    Registered types come back as themselves with the same message and fields;
    anything else (or malformed data) as :class:`RemoteError`. Never imports.
    """
    type_name = str(data.get("type", "Exception"))
    message = str(data.get("message", ""))
    cls = REMOTE_SAFE.get(type_name)
    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    if cls is None:
        return RemoteError(type_name, message, traceback)
    err = cls.__new__(cls)
    FabricError.__init__(err, message, **fields)
    err.remote_traceback = traceback
    return err
