"""Decode fetched bytes to text without ever failing on bad bytes.

Order of evidence: a byte-order mark (unambiguous, and browsers let it override the header), the
Content-Type ``charset``, then a ``<meta charset>`` / ``http-equiv`` / XML declaration in the first few KB,
then a sniff: strict UTF-8 if the bytes are valid UTF-8, else cp1252 (the Web's real "latin-1"). Whatever is
chosen decodes with ``errors="replace"``, so undecodable bytes become U+FFFD instead of an exception.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["decode_text", "normalize_charset", "sniff_declared_charset"]

_PRESCAN_BYTES = 4096

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: its BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Labels that the WHATWG Encoding standard maps onto a superset; decoding with the superset is never worse.
_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}

_META_RE = re.compile(
    rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([a-zA-Z0-9_:.+-]{1,40})""",
    re.IGNORECASE,
)
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([a-zA-Z0-9_.:+-]{1,40})["']""")


def normalize_charset(label: str | None) -> str | None:
    """Return a Python codec name for a charset label, or None if the label is unknown or unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # Only text encodings: codecs such as "rot13", "zlib" or "hex" are registered too.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def sniff_declared_charset(data: bytes) -> str | None:
    """Find a charset declared inside the document (meta tag or XML declaration) in its first bytes."""
    head = data[:_PRESCAN_BYTES]
    match = _XML_DECL_RE.match(head) or _META_RE.search(head)
    if match is None:
        return None
    name = normalize_charset(match.group(1).decode("ascii", "replace"))
    # A document that was read as ASCII-compatible bytes cannot really be UTF-16/32 (HTML spec: use UTF-8).
    if name is not None and name.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        return "utf-8"
    return name


def _bom_charset(data: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    return None


def _is_utf8(data: bytes) -> bool:
    # Incremental decoding ignores a multi-byte character cut off at the end (a truncated body).
    try:
        codecs.getincrementaldecoder("utf-8")(errors="strict").decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def decode_text(
    data: bytes, header_charset: str | None = None, *, sniff_markup: bool = True
) -> tuple[str, str]:
    """Decode ``data``; return ``(text, codec_name)``.

    Args:
        data: The body bytes (possibly truncated mid-character; the cut character becomes U+FFFD).
        header_charset: The ``charset`` parameter of the Content-Type header, if any.
        sniff_markup: Look for ``<meta charset>`` / XML declarations (HTML and XML bodies).
    """
    bom = _bom_charset(data)
    if bom is not None:
        name, skip = bom
        return data[skip:].decode(name, errors="replace"), name
    name = normalize_charset(header_charset)
    if name is None and sniff_markup:
        name = sniff_declared_charset(data)
    if name is None:
        name = "utf-8" if _is_utf8(data) else "cp1252"
    return data.decode(name, errors="replace"), name
