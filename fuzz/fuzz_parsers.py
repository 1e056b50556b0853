"""Fuzz target for the native engine's JSONL, gzip and CSV readers (atheris, libFuzzer under the hood).

Any input must end as rows and rejects, or as InvalidLandingFileError for a file that cannot be read at
all; a panic in the Rust code surfaces as an exception and stops the fuzzer with the crashing input.

    .venv/bin/python fuzz/fuzz_parsers.py -max_total_time=60       # what CI runs, briefly
    .venv/bin/python fuzz/fuzz_parsers.py fuzz/corpus -jobs=2      # a longer hunt, keeping a corpus
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
SEEDS = [
    b'{"id":"a","vector":[0.5,-1e-3,2],"ts":"2026-11-20T10:00:00Z","model":"m","x":{"y":[1,null]}}\n',
    b'{"id":"b","vector":[NaN,Infinity,-0],"ts":1790000000000}\n[1]\n\n{"id":',
    b'id,ts,vector,extra\na,2026-11-20T10:00:00+01:00,"[1,2,3]",x\nb,17,"[1,",\n',
    b"id,ts,v0,v1,v2\na,1,0.1,2e3,-0\n",
]
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
    corpus = os.path.join(_DIR, "seeds")
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        for f in range(len(FORMATS)):
            with open(os.path.join(corpus, f"{i}-{f}"), "wb") as handle:
                handle.write(bytes([f]) + seed)
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(corpus)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
