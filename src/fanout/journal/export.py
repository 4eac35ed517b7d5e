"""``fanout export``: a journal's records as JSONL or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import IO

import orjson

from fanout.journal.store import Journal


def export(journal: Journal, out: IO[bytes], fmt: str = "jsonl") -> int:
    """Write every recorded result to ``out`` as JSONL or CSV; return the count."""
    return write_records(journal.records(), out, fmt)


def write_records(records: Iterable[bytes], out: IO[bytes], fmt: str = "jsonl") -> int:
    """Write JSONL records (one per key) to ``out`` as JSONL or CSV; return the
    count. Shared by the journal's export and the Redis queue's."""
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(record if record.endswith(b"\n") else record + b"\n")
            count += 1
        return count
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    columns = [
        "url", "key", "line", "ok", "status", "final_url", "attempts", "elapsed_ms",
        "bytes", "content_type", "sha256", "path", "error_kind", "error_message",
    ]  # fmt: skip
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        data = orjson.loads(record)
        error = data.get("error") or {}
        data["error_kind"] = error.get("kind")
        data["error_message"] = error.get("message")
        writer.writerow(data)
        count += 1
    text.detach()
    return count
