"""Reading a source file: one checked pass over the bytes, then records in chunks.

The first pass computes the checksum (a re-drop of the same bytes imports nothing) and
decodes every line strictly, so a file in the wrong encoding fails before any row is
written and the error names its first bad line. Line breaks are safe split points:
0x0A never occurs inside a UTF-8 or CP932 character.

Records come from the csv module (C), handed to pandas a chunk at a time for the
column work. pandas' own parser was 2x faster on clean files but cannot say on which
physical line a record starts once a quoted field spans lines, and it either fails
a whole chunk or drops a row with a wrong field count; here such a row becomes a
reject with its line, and memory holds one chunk whatever the file size.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import pandas as pd

BLOCK = 1 << 20
MAX_FIELD = 1 << 24  # 16 MiB: larger fields are refused as "too long" by validation anyway
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))

BOMS = {
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\xfe\xff": "UTF-16",
    b"\xff\xfe": "UTF-16",
}
UTF8_BOM = b"\xef\xbb\xbf"
ENCODING_LABEL = {"utf-8": "UTF-8", "cp932": "CP932 (Shift_JIS)"}


class FileError(ValueError):
    """The whole file is refused (encoding, header, mapping): no row of it is written."""


@dataclass(frozen=True)
class FileFacts:
    checksum: str
    size: int
    encoding: str  # what the file really is: a UTF-8 BOM wins over the mapping
    bom: bool


def scan(open_binary: Callable[[], IO[bytes]], encoding: str, name: str) -> FileFacts:
    """Checksum and strict decode of every line; FileError names the first bad line."""
    sha = hashlib.sha256()
    size = 0
    line = 1
    rest = b""
    first = True
    bom = False
    with open_binary() as fh:
        while block := fh.read(BLOCK):
            sha.update(block)
            size += len(block)
            if first:
                first = False
                for mark, label in BOMS.items():
                    if block.startswith(mark):
                        raise FileError(
                            f"{name}: starts with a {label} byte-order mark; "
                            "save it as UTF-8 or Shift_JIS (CP932)"
                        )
                if block.startswith(UTF8_BOM):
                    bom, encoding, block = True, "utf-8", block[len(UTF8_BOM) :]
            buf = rest + block
            cut = buf.rfind(b"\n") + 1
            line = _decode(buf[:cut], encoding, line, name)
            rest = buf[cut:]
        _decode(rest, encoding, line, name)
    return FileFacts(sha.hexdigest(), size, encoding, bom)


def _decode(part: bytes, encoding: str, line: int, name: str) -> int:
    try:
        part.decode(encoding)
    except UnicodeDecodeError as exc:
        bad_line = line + part.count(b"\n", 0, exc.start)
        start = part.rfind(b"\n", 0, exc.start) + 1
        raise FileError(
            f"{name}: line {bad_line}: bytes {part[exc.start : exc.end + 1].hex(' ')} at "
            f"column {exc.start - start + 1} are not valid {ENCODING_LABEL.get(encoding, encoding)}"
            f" (the mapping's encoding); is the file in "
            f"{'UTF-8' if encoding == 'cp932' else 'Shift_JIS (CP932)'}?"
        ) from None
    return line + part.count(b"\n")


@dataclass
class Chunk:
    """Records with the header's field count, and rows refused for their shape."""

    frame: pd.DataFrame  # mapped columns only (positional names), plus `line`
    bad_shape: list[tuple[int, str, str]]  # (line, value, reason)
    read: int  # records in this chunk, good or bad


class CsvRecords:
    """The header, then chunks of records; `line` is where each record starts."""

    def __init__(self, open_binary: Callable[[], IO[bytes]], facts: FileFacts) -> None:
        self._binary = open_binary()
        encoding = "utf-8-sig" if facts.bom else facts.encoding
        self._text = io.TextIOWrapper(self._binary, encoding=encoding, newline="")
        self._reader = csv.reader(self._text)
        self._last_line = 0
        try:
            self.header = [h.strip() for h in next(self._reader)]
        except StopIteration:
            self.header = []
        self._last_line = self._reader.line_num

    def chunks(self, positions: list[int], size: int) -> Iterator[Chunk]:
        width = len(self.header)
        rows: list[list[str]] = []
        lines: list[int] = []
        bad: list[tuple[int, str, str]] = []
        read = 0
        while True:
            start = self._last_line + 1
            try:
                row = next(self._reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field beyond MAX_FIELD: refuse that record
                self._last_line = self._reader.line_num
                bad.append((start, "", f"unreadable CSV record: {exc}"))
                read += 1
                continue
            self._last_line = self._reader.line_num
            if not row:
                continue  # a blank line holds no record
            read += 1
            if len(row) != width:
                bad.append((start, _preview(row), f"has {len(row)} fields, the header has {width}"))
            else:
                rows.append([row[i] for i in positions])
                lines.append(start)
            if read >= size:
                yield Chunk(_frame(rows, lines, positions), bad, read)
                rows, lines, bad, read = [], [], [], 0
        if read:
            yield Chunk(_frame(rows, lines, positions), bad, read)

    def close(self) -> None:
        self._text.close()


def _frame(rows: list[list[str]], lines: list[int], positions: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(range(len(positions))), dtype=object)
    frame["line"] = lines
    return frame


def _preview(row: list[str], limit: int = 200) -> str:
    text = ",".join(row)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
