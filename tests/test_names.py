"""The naming rule: NFC, no invisible or control characters, and printing that escapes."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.errors import CloseCode
from collab.names import (
    MAX_NAME_BYTES,
    REFUSED_CATEGORIES,
    BadNameError,
    check_name,
    name_from_bytes,
    printable,
)


@pytest.mark.parametrize(
    "name", ["notes/2026/plan", "café", "日本語/メモ", "a b", "emoji 🎉", "x" * MAX_NAME_BYTES]
)
def test_ordinary_names_are_kept(name: str) -> None:
    assert check_name(name) == name


def test_nfd_and_nfc_spellings_are_one_name() -> None:
    nfd = unicodedata.normalize("NFD", "café/Ångström")
    assert nfd != "café/Ångström"
    assert check_name(nfd) == "café/Ångström"
    assert name_from_bytes(nfd.encode()) == "café/Ångström"


@pytest.mark.parametrize(
    ("char", "words"),
    [
        ("\x00", "control"),
        ("\x1b", "control"),
        ("\x7f", "control"),
        ("\x85", "control"),  # C1: NEXT LINE
        ("\u202e", "bidi"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066", "bidi"),  # LEFT-TO-RIGHT ISOLATE
        ("\u200b", "zero-width"),  # ZERO WIDTH SPACE
        ("\u200d", "zero-width"),  # ZERO WIDTH JOINER
        ("\ufeff", "invisible"),  # BYTE ORDER MARK
        ("\u00ad", "invisible"),  # SOFT HYPHEN
        ("\u2028", "line separator"),
        ("\u2029", "paragraph separator"),
    ],
)
def test_invisible_and_control_characters_are_refused(char: str, words: str) -> None:
    with pytest.raises(BadNameError, match=words) as raised:
        check_name(f"invoice{char}gpj.exe")
    assert raised.value.close_code == CloseCode.BAD_DOCUMENT_NAME
    assert f"U+{ord(char):04X}" in str(raised.value)


def test_empty_long_and_undecodable_names_are_refused() -> None:
    with pytest.raises(BadNameError, match="empty"):
        check_name("")
    with pytest.raises(BadNameError, match="the limit is 512"):
        check_name("é" * (MAX_NAME_BYTES // 2 + 1))
    with pytest.raises(BadNameError, match="UTF-8"):
        name_from_bytes(b"caf\xe9")
    with pytest.raises(BadNameError, match="the limit"):
        name_from_bytes(b"x" * 10_000_000)


def test_printable_escapes_what_a_terminal_would_hide_or_obey() -> None:
    assert printable("notes/plan") == "notes/plan"
    assert printable("café") == "café"
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert printable("a\x1b[31mred") == "a\\x1b[31mred"
    assert printable("back\\slash") == "back\\\\slash"  # an escape cannot be forged


@given(st.text(max_size=40))
def test_every_name_is_refused_or_normalized_and_stable(text: str) -> None:
    try:
        name = check_name(text)
    except BadNameError:
        return
    assert name == unicodedata.normalize("NFC", name)
    assert check_name(name) == name
    assert 0 < len(name.encode()) <= MAX_NAME_BYTES
    assert not any(unicodedata.category(c) in REFUSED_CATEGORIES for c in name)


@given(st.text(max_size=40))
def test_printable_output_holds_no_refused_character(text: str) -> None:
    shown = printable(text)
    assert not any(unicodedata.category(c) in REFUSED_CATEGORIES for c in shown)
