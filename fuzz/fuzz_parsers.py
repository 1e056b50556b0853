"""Fuzz target for the native engine's JSONL, gzip and CSV readers (atheris, libFuzzer under the hood).

Any input must end as rows and rejects, or as InvalidLandingFileError for a file that cannot be read at
all; a panic in the Rust code surfaces as an exception and stops the fuzzer with the crashing input.

    .venv/bin/python fuzz/fuzz_parsers.py -max_total_time=60       # what CI runs, briefly
    .venv/bin/python fuzz/fuzz_parsers.py fuzz/corpus rust_ext/fuzz/seeds -jobs=2   # a longer hunt, keeping a corpus
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from nextesy_assets import native
    from nextesy_assets.lib.errors import InvalidLandingFileError

FORMATS = ("jsonl", "jsonl.gz", "csv")
# The seed corpus both fuzz targets share: one file each, its first byte the format (see test_one_input).
SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rust_ext", "fuzz", "seeds")
_DIR = tempfile.mkdtemp(prefix="nextesy-fuzz-")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    path = os.path.join(_DIR, f"input.{fmt}")
    with open(path, "wb") as handle:
        handle.write(data[1:])
    try:
        result = native.convert_file(
            path,
            fmt,
            os.path.join(_DIR, "out"),
            os.path.join(_DIR, "rejects.parquet"),
            dims=3,
            batch_id="fuzz",
            ingested_at_us=0,
            raw_limit=64,
            row_group_rows=4,
            threads=1,
        )
    except InvalidLandingFileError:
        return
    if result.rows_in != result.rows_good + result.rows_rejected:
        raise AssertionError(f"rows lost: {result}")


def main() -> None:
    # New inputs go to a corpus of this run's own; the shared seeds are only read.
    corpus = os.path.join(_DIR, "corpus")
    os.makedirs(corpus, exist_ok=True)
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        args += [corpus, SEEDS]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
