"""Document names: one rule for what a name may be, wherever it arrives.

A name reaches collab as the percent-decoded path of a websocket URL, an HTTP API path
segment or a CLI argument. The same rule applies to all of them:

* it is valid UTF-8, 1 to :data:`MAX_NAME_BYTES` bytes once normalized;
* it is normalized to Unicode NFC (UAX #15), so the precomposed and the decomposed
  spelling of ``café`` (what macOS file names and some keyboards produce) open one
  document, not two that look the same;
* it holds no control characters (C0, DEL, C1: category Cc), no format characters
  (category Cf: bidi overrides and isolates such as U+202E, zero-width spaces and joiners,
  the byte-order mark, soft hyphens), no line or paragraph separators and no lone
  surrogates. Those cannot be typed as part of a name, are invisible or reorder the text
  around them when printed (a name that *displays* as another one), and a NUL cuts a
  name short in SQLite's string functions.

Names stored by an older collab that break the rule are still listed and printed, through
:func:`printable`, which escapes every character that is not safe to show.
"""

from __future__ import annotations

import unicodedata

from collab.errors import CloseCode, RemoteProtocolError

#: Longest document name accepted, in UTF-8 bytes after NFC normalization.
MAX_NAME_BYTES = 512

#: Unicode general categories refused anywhere in a name (see the module docstring).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

_CATEGORY_WORDS = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character (bidi override, zero-width, ...)",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


class BadNameError(RemoteProtocolError):
    """The document name breaks the naming rule (close code 4400, HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CloseCode.BAD_DOCUMENT_NAME)


def check_name(name: str) -> str:
    """Return ``name`` normalized to NFC, or refuse it.

    :raises BadNameError: the name is empty, too long, or holds a refused character.
    """
    if not name:
        raise BadNameError("empty document name")
    if not name.isascii():
        name = unicodedata.normalize("NFC", name)
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise BadNameError(f"document name is {size} bytes; the limit is {MAX_NAME_BYTES}")
    for c in name:
        if (c < " " or c == "\x7f") or (c >= "\x80" and _refused(c)):
            category = unicodedata.category(c)
            what = _CATEGORY_WORDS.get(category, "a control character")
            raise BadNameError(f"document name contains {what} (U+{ord(c):04X})")
    return name


def name_from_bytes(raw: bytes) -> str:
    """Decode a percent-decoded name from the wire (UTF-8) and check it.

    :raises BadNameError: not UTF-8, or refused by :func:`check_name`.
    """
    if len(raw) > 4 * MAX_NAME_BYTES:  # NFC never shrinks a string by 4x: refuse early
        raise BadNameError(f"document name is {len(raw)} bytes; the limit is {MAX_NAME_BYTES}")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadNameError("document name is not valid UTF-8") from None
    return check_name(name)


def printable(name: str) -> str:
    """``name`` safe to print on a terminal or in a log: refused characters (and
    backslashes, so the escaping cannot be forged) shown as ``\\u202e``-style escapes."""
    if name.isascii() and name.isprintable() and "\\" not in name:
        return name
    out = []
    for c in name:
        if c == "\\":
            out.append("\\\\")
        elif (c < " " or c == "\x7f") or (c >= "\x80" and _refused(c)):
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(c)
    return "".join(out)


def _refused(c: str) -> bool:
    return unicodedata.category(c) in REFUSED_CATEGORIES


__all__ = ["MAX_NAME_BYTES", "BadNameError", "check_name", "name_from_bytes", "printable"]
