"""`nextesy convert --engine python`: the reference implementation end to end, for comparison."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from .ingest import _embeddings_table, _rejects_table, split_by_day, write_parquet
from .records import parse_file


def convert_with_oracle(
    input_path: str,
    fmt: str,
    out: Path,
    rejects: Path,
    dims: int,
    model: str,
    batch_id: str,
    row_group_rows: int,
    sidecar: str | None,
) -> tuple[int, int, int, dict[str, int], int, int]:
    """Same layout as the native engine; returns (rows in, good, rejected, reasons, files, bytes)."""
    parsed = parse_file(input_path, fmt, dims, model, 256 * 1024, (), sidecar)
    now = datetime.now(UTC)
    files = written = 0
    if parsed.rows_good:
        for label, part in split_by_day(parsed, _embeddings_table(parsed, batch_id, now)):
            path = os.path.join(out, f"ts_day={label}", f"{batch_id}.parquet")
            written += write_parquet(part, path, row_group_rows)
            files += 1
    if parsed.rejects:
        write_parquet(_rejects_table(parsed, batch_id, now), str(rejects), 65_536)
    reasons = dict(Counter(str(r.reason) for r in parsed.rejects))
    return parsed.rows_in, parsed.rows_good, len(parsed.rejects), reasons, files, written
