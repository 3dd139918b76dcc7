"""A list file read as records of text: its encoding (given, marked or detected), delimiter and lines.

What the columns mean is `roster`'s business; this module turns bytes into CSV records, streaming, and
says exactly where a file stops being readable (the line, and the byte counted from the file's start).
"""

from __future__ import annotations

import codecs
import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from newsletter.cjk import CJK_RE
from newsletter.errors import ImportFileError

MAX_LINE_BYTES = 1_048_576  # a subscriber is a short line; a longer one is no list (a dump, a binary file)
MAX_FIELD_CHARS = 100_000
SAMPLE_BYTES = 1_048_576  # what encoding detection reads before it decides
MIN_DETECTED_CHARACTERS = 12  # fewer non-ASCII characters say too little to trust a guess
DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal mark is a comma, tabs as "Unicode Text"
# Byte order marks, longest first (a UTF-32 LE mark begins with the UTF-16 LE one).
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
# Spreadsheet workbooks saved instead of CSV: zip (xlsx, ods) and OLE2 (xls).
WORKBOOK_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
# What charset-normalizer may call a Chinese file; GB18030 decodes all of them (GB2312 < GBK < GB18030).
CHINESE_ENCODINGS = frozenset({"gb2312", "gbk", "gb18030", "hz"})


@dataclass(frozen=True)
class Decoding:
    """How a file's bytes become text."""

    codec: str  # the Python codec
    name: str  # as a person calls it: UTF-8, UTF-16, GB18030
    how: str  # "given", "byte order mark", "detected"
    skip_bytes: int = 0  # the byte order mark


@dataclass(frozen=True)
class Record:
    line: int  # the line of the file it starts on, counted from 1
    values: list[str]


class ListFile:
    """An open list file: `header`, then `records()` one at a time; closes on leaving the `with` block."""

    def __init__(self, path: Path, encoding: str | None = None, name: str | None = None) -> None:
        self.name = name or str(path)  # how errors name the file: an upload's own name, not where it was saved
        try:
            self._file: BinaryIO = path.open("rb")
        except FileNotFoundError:
            raise ImportFileError(f"{self.name} does not exist") from None
        except OSError as error:
            raise ImportFileError(f"cannot read {self.name}: {error.strerror}") from None
        try:
            head = self._file.read(SAMPLE_BYTES)
            self.decoding = choose_decoding(self.name, head, encoding)
            self._file.seek(self.decoding.skip_bytes)
            lines = _text_lines(_pieces(self._file, _line_end(head, self.decoding)), self.decoding, self.name)
            first = next(lines, None)
            if first is None or not first.strip():
                raise ImportFileError(f"{self.name} is empty")
            self.delimiter = max(DELIMITERS, key=first.count) if any(d in first for d in DELIMITERS) else ","
            self._reader = csv.reader(itertools.chain([first], lines), delimiter=self.delimiter)
            try:
                self.header = next(self._reader)
            except csv.Error as error:
                raise ImportFileError(f"{self.name} is not valid CSV at line 1: {error}") from None
        except BaseException:
            self._file.close()
            raise

    def records(self) -> Iterator[Record]:
        """The records after the header; an unreadable one ends the import with the line it is on."""
        csv.field_size_limit(MAX_FIELD_CHARS)
        while True:
            line = self._reader.line_num + 1
            try:
                values = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise ImportFileError(f"{self.name} is not valid CSV at line {line}: {error}") from None
            yield Record(line, values)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ListFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def choose_decoding(name: str, head: bytes, given: str | None) -> Decoding:
    """The encoding named by the caller, else by a byte order mark, else UTF-8, else a confident guess.

    Raises:
        ImportFileError: an unknown encoding name, a workbook rather than CSV, or bytes no encoding
            explains with confidence (the error names the first bad byte and suggests `--encoding`).
    """
    marked = next(((bom, codec, name) for bom, codec, name in BYTE_ORDER_MARKS if head.startswith(bom)), None)
    if given:
        try:
            codec = codecs.lookup(given).name
        except LookupError:
            raise ImportFileError(f"unknown encoding {given!r} (try utf-8, utf-16, gb18030, big5 or cp1252)") from None
        if marked and marked[1].removesuffix("-le").removesuffix("-be") == codec:
            return Decoding(marked[1], given, "given", len(marked[0]))  # the mark says which byte order
        return Decoding(codec, given, "given")
    if head.startswith(WORKBOOK_SIGNATURES):
        raise ImportFileError(f"{name} is a spreadsheet workbook, not CSV: save it as CSV UTF-8 and import that")
    if marked:
        return Decoding(marked[1], marked[2], "byte order mark", len(marked[0]))
    unmarked = _utf16_without_mark(head)
    if unmarked:
        return Decoding(unmarked, "UTF-16", "detected")
    problem = _utf8_problem(head)
    if problem is None:
        return Decoding("utf-8", "UTF-8", "detected")
    guess = _guess(head)
    if guess == "gb18030" and _reads_as_chinese(head):
        return Decoding("gb18030", "GB18030", "detected")
    line_end = b"\n" if b"\n" in head else b"\r"
    line, offset = head[: problem.start].count(line_end) + 1, problem.start
    hint = f"it may be {guess}: " if guess else ""
    raise ImportFileError(
        f"{name} is not UTF-8 (line {line}, byte {offset:,}: {_shown(head[offset : offset + 1])}); "
        f"{hint}name its encoding (--encoding, or the import form's Encoding), or save it as CSV UTF-8"
    )


def _utf8_problem(head: bytes) -> UnicodeDecodeError | None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        cut_short = len(head) == SAMPLE_BYTES and error.reason == "unexpected end of data"
        return None if cut_short else error
    return None


def _utf16_without_mark(head: bytes) -> str | None:
    """UTF-16 written without a byte order mark: mostly ASCII text, so every other byte is zero."""
    sample = head[:4096]
    if len(sample) < 8 or sample.count(0) * 3 < len(sample):
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def _guess(head: bytes) -> str:
    """charset-normalizer's best guess ("" when it has none), with the Chinese family named gb18030."""
    from charset_normalizer import from_bytes

    best = from_bytes(head[:SAMPLE_BYTES]).best()
    if best is None:
        return ""
    return "gb18030" if best.encoding in CHINESE_ENCODINGS else best.encoding


def _reads_as_chinese(head: bytes) -> bool:
    """Read as GB18030, the sample has enough non-ASCII characters and nearly all of them are CJK."""
    text = head.decode("gb18030", errors="replace")
    foreign = [char for char in text if ord(char) > 127]
    if len(foreign) < MIN_DETECTED_CHARACTERS:
        return False
    return sum(1 for char in foreign if CJK_RE.match(char)) >= 0.95 * len(foreign)


def _line_end(head: bytes, decoding: Decoding) -> bytes:
    """b"\r" for a file whose lines end in CR alone (Excel for Mac's "CSV (Macintosh)"), else b"\n".

    Only in encodings where the byte 0x0D is always a CR: in UTF-16 it is also half of other characters.
    """
    if b"\n" in head or b"\r" not in head or decoding.codec.startswith(("utf-16", "utf-32")):
        return b"\n"
    return b"\r"


def _pieces(file: BinaryIO, line_end: bytes) -> Iterator[bytes]:
    """The file's lines as bytes ending in b"\n", each at most MAX_LINE_BYTES + 1 long (longer is refused)."""
    if line_end == b"\n":
        while piece := file.readline(MAX_LINE_BYTES + 1):
            yield piece
        return
    pending = b""
    while chunk := file.read(64 * 1024):
        *lines, pending = (pending + chunk).split(line_end)
        yield from (line + b"\n" for line in lines)  # the same length: byte offsets stay right
        if len(pending) > MAX_LINE_BYTES:
            yield pending
            return
    if pending:
        yield pending


def _text_lines(pieces: Iterator[bytes], decoding: Decoding, name: str) -> Iterator[str]:
    """The file's lines as text, line endings kept (csv wants them), never more than MAX_LINE_BYTES at once."""
    decoder = codecs.getincrementaldecoder(decoding.codec)("strict")
    offset, line, pending = decoding.skip_bytes, 1, ""
    for piece in pieces:
        if len(piece) > MAX_LINE_BYTES:
            raise ImportFileError(
                f"{name} line {line} is longer than {MAX_LINE_BYTES // 1024} KiB: this is not a list of subscribers"
            )
        held = len(decoder.getstate()[0])  # bytes of a character the previous piece left unfinished
        try:
            text = decoder.decode(piece)
        except UnicodeDecodeError as error:
            at = offset - held + error.start
            line += (pending + piece[: max(error.start - held, 0)].decode(decoding.codec, "replace")).count("\n")
            raise ImportFileError(
                f"{name} is not {decoding.name} at line {line}, byte {at:,} "
                f"({_shown(piece[max(error.start - held, 0) :][:1])}): name its encoding with --encoding"
            ) from None
        if "\x00" in text:
            at = offset + max(piece.find(b"\x00"), 0)
            raise ImportFileError(
                f"{name} has a NUL byte at line {line + (pending + text[: text.find(chr(0))]).count(chr(10))}, "
                f"byte {at:,}: it is not a text file (save the sheet as CSV UTF-8)"
            )
        offset += len(piece)
        pending += text
        while (end := pending.find("\n")) >= 0:
            yield pending[: end + 1]
            pending = pending[end + 1 :]
            line += 1
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportFileError(f"{name} ends inside a {decoding.name} character (byte {offset:,})") from None
    if pending:
        yield pending


def _shown(data: bytes) -> str:
    return f"0x{data.hex()}" if data else "end of file"
