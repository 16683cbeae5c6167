"""The character set a shop's mail is written in (seed 002): UTF-8 or ISO-2022-JP.

UTF-8 (default) carries every character. ISO-2022-JP is for recipients whose phones or
mail software still expect it; it is Python's strict `iso2022_jp` codec: ASCII, JIS X
0201 Roman and JIS X 0208 only. No CP50220/CP50221-style vendor extensions (NEC special
characters such as ① and ㈱, IBM extensions such as 髙 and 﨑): a receiver decoding real
ISO-2022-JP would show them wrong or not at all. Half-width katakana (ｱ) is JIS X 0201
kana, not part of ISO-2022-JP either; it is reported (write full-width カ), never
converted silently. Emoji and anything else outside JIS X 0208 are reported the same way.

A character that cannot be written is an error naming the field and the characters:
at template save time (the template's literal text) and at send time (the rendered
text, e.g. a customer's name) — never a `?` or a dropped character.
"""

from __future__ import annotations

import unicodedata

UTF8 = "utf-8"
ISO_2022_JP = "iso-2022-jp"
CHARSETS = (UTF8, ISO_2022_JP)
CODECS = {UTF8: "utf-8", ISO_2022_JP: "iso2022_jp"}


class CharsetError(ValueError):
    """Text holding characters its charset cannot carry; names the field and them."""

    def __init__(self, field: str, charset: str, chars: list[str]) -> None:
        super().__init__(f"{field}: {describe(chars)} cannot be written in {charset}")
        self.field, self.charset, self.chars = field, charset, chars


def check_charset(value: str | None) -> str:
    """A shop's charset setting, normalised; ValueError naming the value otherwise."""
    name = (value or UTF8).strip().lower().replace("_", "-")
    if name in ("utf8", UTF8):
        return UTF8
    if name in ("iso2022jp", ISO_2022_JP, "jis"):
        return ISO_2022_JP
    raise ValueError(f"charset {value!r}: unknown (known: {', '.join(CHARSETS)})")


def unencodable(text: str | None, charset: str) -> list[str]:
    """The distinct characters of `text` that `charset` cannot carry, in order."""
    if not text or charset == UTF8:
        return []
    codec = CODECS[charset]
    try:
        text.encode(codec)
        return []
    except UnicodeEncodeError:
        pass
    # Each distinct character once, in order of first appearance (a 2 MB body has a few
    # thousand distinct characters at most).
    return [ch for ch in dict.fromkeys(text) if not _encodes(ch, codec)]


def _encodes(ch: str, codec: str) -> bool:
    try:
        ch.encode(codec)
        return True
    except UnicodeEncodeError:
        return False


def check_text(field: str, text: str | None, charset: str) -> None:
    if chars := unencodable(text, charset):
        raise CharsetError(field, charset, chars)


def describe(chars: list[str], limit: int = 20) -> str:
    """`'①' (U+2460 CIRCLED DIGIT ONE), …` with a hint for half-width katakana."""
    shown = [f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, 'unnamed')})" for c in chars[:limit]]
    if len(chars) > limit:
        shown.append(f"and {len(chars) - limit} more")
    text = ", ".join(shown)
    if any("HALFWIDTH KATAKANA" in unicodedata.name(c, "") for c in chars):
        text += " (half-width katakana: write it full-width)"
    return text
