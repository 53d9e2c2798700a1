"""Every RPC client method of every worker (``fabric/<service>/rpcapi.py``) against the manager
that serves it: the manager exposes a handler of the method name the client sends, every
keyword the client sends is a parameter of that handler, and every parameter the handler
requires is sent. A renamed or added argument on one side only fails here, not at run time
on a worker.
"""

from __future__ import annotations

import importlib
import inspect
import types
from typing import Any

import pytest

from fabric.context import RequestContext
from fabric.rpc import envelope

#: service -> (its rpcapi module, its manager class "module:Class").
SERVICES = {
    "compute": ("fabric.compute.rpcapi", "fabric.compute.manager:ComputeManager"),
    "network": ("fabric.network.rpcapi", "fabric.network.manager:NetworkManager"),
    "ipam": ("fabric.ipam.rpcapi", "fabric.ipam.manager:IpamManager"),
    "scheduler": ("fabric.scheduler.rpcapi", "fabric.scheduler.manager:SchedulerManager"),
}


class RecordingClient:
    """Stands in for fabric.rpc.RPCClient: keeps (kind, method, kwargs) of each request."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        # This release's envelope, as an RPCClient's transport writes by default (a client may
        # choose what to send by it: see NetworkAPI.security_members_changed).
        self.transport = types.SimpleNamespace(settings=types.SimpleNamespace(envelope_version=envelope.VERSION))

    def prepare(self, **_options: Any) -> RecordingClient:
        return self

    def cast(self, ctx, method: str, **kwargs: Any) -> None:
        self.sent.append(("cast", method, kwargs))

    def fanout_cast(self, ctx, method: str, **kwargs: Any) -> None:
        self.sent.append(("fanout_cast", method, kwargs))

    def call(self, ctx, method: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        self.sent.append(("call", method, kwargs))
        return {}

    def call_async(self, ctx, method: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        raise AssertionError(f"{method}: call_async is not expected from an rpcapi")


def _value_for(parameter: inspect.Parameter) -> Any:
    """A value of the parameter's annotated type (annotations are strings here), never its default,
    so that keywords a client sends only when given are sent too."""
    annotation = str(parameter.annotation)
    if parameter.name == "ctx":
        return RequestContext()
    if "bool" in annotation:
        return not parameter.default if isinstance(parameter.default, bool) else True
    if annotation.startswith("int") or annotation.startswith("float"):
        return 7
    if "dict" in annotation:
        return {"name": "x", "id": "x"}
    if "list" in annotation:
        return ["x"]
    return "x"


def _client_classes(module_name: str) -> list[type]:
    module = importlib.import_module(module_name)
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module_name and cls.__name__.endswith("API")]


def _exposed_handlers(manager_cls: type) -> dict[str, inspect.Signature]:
    """The manager's RPC handlers (as fabric.rpc.server.public_methods exposes them) and their signatures."""
    private = manager_cls.rpc_private.fget(manager_cls.__new__(manager_cls))
    return {name: inspect.signature(function) for name, function in inspect.getmembers(manager_cls, callable)
            if not name.startswith("_") and name not in private and not inspect.isclass(function)}


def _requests(client_cls: type) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(client method, kind, RPC method, kwargs) of every public method of ``client_cls``."""
    requests = []
    for name, function in inspect.getmembers(client_cls, inspect.isfunction):
        if name.startswith("_"):
            continue
        client = client_cls.__new__(client_cls)
        client.client = RecordingClient()
        parameters = list(inspect.signature(function).parameters.values())[1:]  # self
        args, kwargs = [], {}
        for p in parameters:
            if p.kind is p.KEYWORD_ONLY:
                kwargs[p.name] = _value_for(p)
            elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                args.append(_value_for(p))
        function(client, *args, **kwargs)
        assert client.client.sent, f"{client_cls.__name__}.{name} sent nothing"
        requests += [(name, kind, method, sent) for kind, method, sent in client.client.sent]
    return requests


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_client_method_matches_its_managers_handler(service):
    rpcapi_module, manager_path = SERVICES[service]
    module_name, class_name = manager_path.split(":")
    handlers = _exposed_handlers(getattr(importlib.import_module(module_name), class_name))
    clients = _client_classes(rpcapi_module)
    assert clients, f"{rpcapi_module} has no client class"
    problems, checked = [], 0
    for client_cls in clients:
        for client_method, kind, method, sent in _requests(client_cls):
            checked += 1
            where = f"{client_cls.__name__}.{client_method} ({kind} {method!r})"
            signature = handlers.get(method)
            if signature is None:
                problems.append(f"{where}: the manager has no RPC handler {method!r}")
                continue
            parameters = dict(list(signature.parameters.items())[2:])  # self, ctx
            takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
            unknown = sorted(set(sent) - set(parameters)) if not takes_any else []
            if unknown:
                problems.append(f"{where}: sends {unknown}, not parameters of the handler {signature}")
            missing = sorted(n for n, p in parameters.items()
                             if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                             and n not in sent)
            if missing:
                problems.append(f"{where}: does not send {missing}, which the handler {signature} requires")
    assert checked
    assert problems == [], "\n".join(problems)


def test_the_check_sees_a_keyword_the_manager_does_not_take():
    """The test above fails for a client that sends a keyword the handler lacks (and a method it lacks)."""

    class BrokenAPI:
        def __init__(self) -> None:
            self.client = RecordingClient()

        def stop_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
            self.client.prepare(server=host).cast(ctx, "stop_instance", instance_id=instance_id, force=True)

    [(_, _, method, sent)] = _requests(BrokenAPI)
    handlers = _exposed_handlers(importlib.import_module("fabric.compute.manager").ComputeManager)
    assert method in handlers and "force" in sent
    assert "force" not in handlers[method].parameters
    assert "sync_power_states" not in handlers  # periodic tasks are not RPC handlers
