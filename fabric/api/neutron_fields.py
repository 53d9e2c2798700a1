"""Neutron's ``?fields=`` selector: a list or show of any Network v2.0 resource answers only
the attributes named (``?fields=id&fields=name``, or ``?fields=id,name``); without it, all."""

from __future__ import annotations

import falcon


def wanted(req: falcon.Request) -> list[str] | None:
    """The attributes ``?fields=`` names, in order, or None when it names none."""
    names = [name for raw in (req.get_param_as_list("fields") or []) for name in raw.split(",") if name]
    return names or None


def select(req: falcon.Request, doc: dict) -> dict:
    """``doc`` cut to the attributes the request's ``?fields=`` names (those it has)."""
    names = wanted(req)
    return doc if names is None else {name: doc[name] for name in names if name in doc}


def select_all(req: falcon.Request, docs: list[dict]) -> list[dict]:
    """:func:`select` of each document of a listing."""
    names = wanted(req)
    return docs if names is None else [{name: doc[name] for name in names if name in doc} for doc in docs]
