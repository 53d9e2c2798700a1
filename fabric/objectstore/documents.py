"""S3's XML: the documents the objectstore answers with and the few it reads.

Answers are built as text (a listing of 1,000 keys is the hot path, and
string building is several times faster than an element tree); every value
goes through :func:`escape`. Request documents (DeleteObjects,
CompleteMultipartUpload, CreateBucketConfiguration) are parsed with the
standard library's expat-based parser, whose entity-expansion limits refuse
"billion laughs" documents; their size is bounded before parsing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape as _escape

from fabric.objectstore.errors import S3Error

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'

#: Largest request document read (DeleteObjects of 1,000 long keys fits).
MAX_REQUEST_XML = 2 * 1024 * 1024


def escape(value: Any) -> str:
    """``value`` as XML character data (``&``, ``<``, ``>`` and quotes escaped)."""
    return _escape(str(value), {'"': "&quot;"})


def timestamp(value: datetime.datetime) -> str:
    """S3's timestamp format in documents: ISO 8601, milliseconds, Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def element(name: str, value: Any) -> str:
    """``<name>value</name>``; nothing for ``None``; booleans as ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(value)}</{name}>"


def elements(pairs: Iterable[tuple[str, Any]]) -> str:
    return "".join(element(name, value) for name, value in pairs)


def document(root: str, body: str) -> bytes:
    """A whole answer: the XML declaration and ``root`` in S3's namespace around ``body``."""
    return f'{HEADER}<{root} xmlns="{S3_NS}">{body}</{root}>'.encode()


def error_document(code: str, message: str, request_id: str, fields: dict[str, Any]) -> bytes:
    """S3's ``<Error>`` document (no namespace, as S3 sends it)."""
    extra = elements((name, value) for name, value in fields.items())
    return (f"{HEADER}<Error>{element('Code', code)}{element('Message', message)}{extra}"
            f"{element('RequestId', request_id)}</Error>").encode()


def owner(project_id: str, display_name: str) -> str:
    return f"<Owner>{element('ID', project_id)}{element('DisplayName', display_name)}</Owner>"


# --- request documents --------------------------------------------------------


def _local(tag: str) -> str:
    """A tag without its namespace (clients send S3's namespace, or none)."""
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, root: str) -> ElementTree.Element:
    """The root element of a request document; MalformedXML when it is not XML or not ``root``."""
    if len(body) > MAX_REQUEST_XML:
        raise S3Error("MalformedXML", f"the XML document is {len(body)} bytes; at most {MAX_REQUEST_XML} are read")
    try:
        tree = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise S3Error("MalformedXML", f"the request body is not well-formed XML: {exc}") from None
    if _local(tree.tag) != root:
        raise S3Error("MalformedXML", f"the document's root is <{_local(tree.tag)}>; expected <{root}>")
    return tree


def children(node: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in node if _local(child.tag) == name]


def text_of(node: ElementTree.Element, name: str, *, required: bool = False) -> str | None:
    """The text of ``node``'s child ``name``; MalformedXML when required and missing."""
    for child in node:
        if _local(child.tag) == name:
            return child.text or ""
    if required:
        raise S3Error("MalformedXML", f"<{_local(node.tag)}> needs a <{name}> element")
    return None
