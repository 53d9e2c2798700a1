"""Limits every request's input meets before a handler sees it.

Promises:

* a JSON body larger than ``[api] max_request_body`` bytes is refused with 413 before
  it is parsed (read no further than the limit, also when sent chunked);
* a JSON body nesting deeper than :data:`MAX_JSON_DEPTH` is refused with 400 (deep
  enough input would otherwise exhaust Python's recursion limit in the parser: a 500);
* no string anywhere in a JSON body, nor any query parameter, may hold NUL: PostgreSQL
  cannot store it in text and fails the statement (a 500), MariaDB silently keeps it;
  names and descriptions may hold no control character at all (:data:`TEXT_KEYS`).
  Each is refused with 400 naming where it was.

What a field's own schema checks (lengths, ranges, formats) stays with its schema.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import falcon

from fabric import exception

#: Deeper than any API document (a server create with its block devices nests 4), far
#: shallower than the parser's recursion limit.
MAX_JSON_DEPTH = 32
#: Keys whose string values are names or descriptions: no control characters.
TEXT_KEYS = frozenset({"name", "description", "display_name", "display_description"})


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def check_query(req: falcon.Request) -> None:
    """Refuse a query parameter holding NUL (400 naming it)."""
    for name, value in req.params.items():
        values = value if isinstance(value, list) else [value]
        if any("\x00" in v for v in values) or "\x00" in name:
            raise exception.Invalid(reason=f"query parameter {name!r} holds a NUL character")


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes."""
    if req.content_length is not None and req.content_length > limit:
        raise exception.RequestTooLarge(size=req.content_length, limit=limit)
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise exception.RequestTooLarge(size=f"over {limit}", limit=limit)
    return raw


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, held to the limits above; Invalid naming the problem otherwise."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise exception.Invalid(reason=f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise exception.Invalid(reason=f"the request body is not valid JSON: {exc}") from None
    check_document(doc)
    return doc


def check_document(doc: Any) -> None:
    """Walk ``doc`` (without recursion): its depth, NUL anywhere, control characters in text."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise exception.Invalid(reason=f"the request body nests deeper than {MAX_JSON_DEPTH} levels "
                                           f"(at '{path}')")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                if "\x00" in key:
                    raise exception.Invalid(reason=f"key {where!r} holds a NUL character")
                if isinstance(item, str) and key in TEXT_KEYS and _has_control(item):
                    raise exception.Invalid(reason=f"'{where}' holds a control character: names and "
                                                   f"descriptions may not ({item[:40]!r})")
                stack.append((item, where, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{n}]", depth + 1) for n, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            raise exception.Invalid(reason=f"'{path}' holds a NUL character")
