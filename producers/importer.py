"""
Streaming import of lead files: JSON Lines or CSV, in batches, with progress.

JSON Lines mirror the platform's own JSON, one lead per line. CSV columns use
dots for nested fields (`utm.utm_source`); an empty cell is an absent field,
`true`/`false` are booleans, and a cell that starts with `[` or `{` is read as
JSON (Calltouch's `matching`). Every bad row is reported with its line
number, the field and the rule; good rows are accepted around it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from producers.client import Producer
from worker.errors import FieldError
from worker.intake import Submission

#: leads per transaction
BATCH = 500


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    lead: Any
    idempotency_key: str | None = None
    error: FieldError | None = None  #: the row could not even be read


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    refused: list[tuple[int, FieldError]] = field(default_factory=list)

    @property
    def refused_rows(self) -> int:
        return len({line for line, _ in self.refused})


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


def read_jsonl(stream: IO[str], key_field: str | None) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            lead = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(number, None, error=FieldError("line", f"not valid JSON ({exc.msg})"))
            continue
        except ValueError:  # a number of more digits than Python converts
            yield Row(number, None, error=FieldError("line", "a number too long to read"))
            continue
        except RecursionError:
            yield Row(number, None, error=FieldError("line", "JSON nested too deeply"))
            continue
        yield Row(number, *_split_key(lead, key_field))


def _split_key(lead: Any, key_field: str | None) -> tuple[Any, str | None]:
    if key_field and isinstance(lead, dict) and key_field in lead:
        lead = dict(lead)
        key = lead.pop(key_field)
        return lead, None if key is None else str(key)
    return lead, None


def _cell(value: str) -> Any:
    text = value.strip()
    if text in ("true", "false"):
        return text == "true"
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def unflatten(row: dict[str, str]) -> dict[str, Any]:
    """`{"utm.utm_source": "x"}` → `{"utm": {"utm_source": "x"}}`; empty cells dropped."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or value.strip() == "":
            continue
        target = out
        *parents, leaf = column.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = _cell(value)
    return out


def read_csv(stream: IO[str], key_field: str | None) -> Iterator[Row]:
    reader = csv.DictReader(stream)
    for record in reader:
        number = reader.line_num
        if None in record:
            yield Row(number, None, error=FieldError("row", "more cells than header columns"))
            continue
        yield Row(number, *_split_key(unflatten(record), key_field))


def read_rows(path: Path, fmt: str | None = None, key_field: str | None = None) -> Iterator[Row]:
    fmt = fmt or detect_format(path)
    # Bytes that are not UTF-8 become lone surrogates, which the door refuses by
    # field and line, instead of one bad byte aborting the whole import.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        reader = read_csv if fmt == "csv" else read_jsonl
        yield from reader(stream, key_field)


def import_rows(
    producer: Producer,
    destination: str,
    rows: Iterator[Row],
    *,
    source: str = "cli",
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Submit rows in batches of BATCH; returns what was accepted and each refusal by line."""
    report = ImportReport()
    batch: list[Row] = []
    for row in rows:
        if row.error is not None:
            report.refused.append((row.line, row.error))
            if progress:
                progress(1)
            continue
        batch.append(row)
        if len(batch) >= BATCH:
            _flush(producer, destination, batch, report, source, progress)
            batch = []
    if batch:
        _flush(producer, destination, batch, report, source, progress)
    return report


def _flush(
    producer: Producer,
    destination: str,
    batch: list[Row],
    report: ImportReport,
    source: str,
    progress: Callable[[int], None] | None,
) -> None:
    results = producer.submit_many(
        destination,
        [Submission(r.lead, r.idempotency_key) for r in batch],
        source=source,
    )
    for row, result in zip(batch, results, strict=True):
        if result.lead_id is None:
            report.refused += [(row.line, e) for e in result.errors]
        elif result.created:
            report.accepted += 1
        else:
            report.duplicates += 1
    if progress:
        progress(len(batch))


def count_lines(path: Path) -> int:
    """Lines in a file, for the progress bar's total (read in 1 MiB chunks)."""
    total = 0
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            total += chunk.count(b"\n")
    return total


def text_stream(data: str) -> IO[str]:
    return io.StringIO(data)
