"""A CSV feed's records, read so that a broken row costs only itself.

Python's csv reader gives up on a whole file at one over-long cell (131,072 characters)
and lets one unterminated quote swallow every later line into a single cell. Here such a
record is reported with the line it starts on, and reading goes on from the next line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class CsvHeaderError(ValueError):
    """The header row itself cannot be read."""


@dataclass(frozen=True)
class CsvRecord:
    number: int  # 1-based data row (the header is row 0)
    line: int  # 1-based line of the file the record starts on
    cells: list[str] | None  # None: unreadable, `error` says why
    error: str = ""


def csv_dialect(sample: str) -> Any:
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel
    # '|' separates images inside a cell, never columns
    return csv.excel if dialect.delimiter == "|" else dialect


class _Lines:
    """The file's lines from a position that the reader of records may move back."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.position = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.position >= len(self.lines):
            raise StopIteration
        self.position += 1
        return self.lines[self.position - 1]


class CsvRecords:
    """The header (read on construction) and then the data records, in file order."""

    def __init__(self, text: str) -> None:
        self._dialect = csv_dialect(text[:8192])
        self._lines = _Lines(list(io.StringIO(text, newline="")))
        self._reader = csv.reader(self._lines, self._dialect)
        try:
            self.header = next(self._reader, [])
        except csv.Error as exc:
            raise CsvHeaderError(f"the header row cannot be read ({exc})") from None

    def __iter__(self) -> Iterator[CsvRecord]:
        number = 0
        while True:
            start = self._lines.position
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                yield self._broken(
                    number, start, f"unreadable CSV ({exc}); line {start + 1} skipped"
                )
                continue
            if not cells:  # a blank line is not a row
                continue
            number += 1
            problem = self._problem(cells, start)
            if problem:
                yield self._broken(number, start, problem)
            else:
                yield CsvRecord(number, start + 1, cells)

    def _problem(self, cells: list[str], start: int) -> str:
        spanned = self._lines.position - start
        if spanned > 1 and (len(cells) != len(self.header) or self._unclosed(start)):
            return (
                f"a quoted cell opened on line {start + 1} is not closed where the row "
                f"should end (it would swallow {_lines(spanned - 1)}); line {start + 1} "
                "skipped"
            )
        if len(cells) > len(self.header):
            return "more cells than the header has columns"
        return ""

    def _unclosed(self, start: int) -> bool:
        """Whether the record ran to the end of the file inside quotes."""
        if self._lines.position < len(self._lines.lines):
            return False
        raw = "".join(self._lines.lines[start:])
        try:
            for _ in csv.reader(io.StringIO(raw, newline=""), self._dialect, strict=True):
                pass
        except csv.Error:
            return True
        return False

    def _broken(self, number: int, start: int, reason: str) -> CsvRecord:
        """Skips only the line the broken record starts on: reading resumes on the next."""
        self._lines.position = start + 1
        return CsvRecord(number, start + 1, None, reason)


def _lines(count: int) -> str:
    return f"{count} more line" if count == 1 else f"{count} more lines"
