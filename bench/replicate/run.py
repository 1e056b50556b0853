"""Replication benchmark: the gcs_replica logic against a plain google-cloud-storage upload, same run.

Runs on moto (S3) and fake-gcs-server (GCS) on 127.0.0.1, started here; no cloud account needed.
Measures, in one run on the same files: replica throughput / plain-upload throughput (a ratio: these
machines are shared and noisy), and bytes moved by an incremental run / bytes that were new (must be 1.0).

    .venv/bin/python bench/replicate/run.py [--batches 6] [--rows 4000] [--dims 768]

Writes bench/results/replicate.json and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import stores  # noqa: E402  (the same stand-ins the tests start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--dims", type=int, default=768)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nextesy-bench-replicate-"))
    os.environ.update(stores.CLOUD_ENV)
    s3 = stores.moto_server()
    gcs = stores.fake_gcs_server(work)
    os.environ["AWS_ENDPOINT_URL"] = next(s3)
    os.environ["STORAGE_EMULATOR_HOST"] = next(gcs)
    os.environ.update(
        NEXTESY_HOME=str(work / "home"),
        NEXTESY_DIMS=str(args.dims),
        NEXTESY_LANDING_URI="s3://bench-aws/landing",
        NEXTESY_WAREHOUSE_URI="s3://bench-aws/warehouse",
        NEXTESY_REPLICA_URI="gs://bench-gcp/replica",
        DAGSTER_HOME=str(work / "home" / "dagster"),
    )
    import boto3

    from nextesy_assets.definitions import defs
    from nextesy_assets.lib import demo, iceberg, replication, storage
    from nextesy_assets.lib.settings import Settings
    from nextesy_assets.sync import dagster_instance, pending_batches

    boto3.client("s3").create_bucket(Bucket="bench-aws")
    gcs_client = storage.gcs_client()
    gcs_client.create_bucket("bench-gcp")
    gcs_client.create_bucket("bench-plain")
    settings = Settings.load()
    instance = dagster_instance(settings)
    job = defs.resolve_job_def("ingest_batch")

    def ingest_new() -> None:
        scan = pending_batches(settings, instance)
        instance.add_dynamic_partitions("batches", [r.batch_id for r in scan.new])
        for registration in scan.new:
            result = job.execute_in_process(
                partition_key=registration.batch_id,
                instance=instance,
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            )
            assert result.success

    print(f"ingesting {args.batches} batches of {args.rows} x {args.dims} ...", file=sys.stderr)
    demo.write_demo(settings, files=args.batches, rows=args.rows, seed=1)
    ingest_new()
    source = iceberg.embeddings_table(settings)
    files = [f.file_path for f in replication.live_files(source).values()]
    total_bytes = sum(f.file_size_in_bytes for f in replication.live_files(source).values())

    # Plain upload: the same files, read from S3 and uploaded with google-cloud-storage, 8 at a time.
    def plain(uri: str) -> int:
        data = storage.read_bytes(uri)
        gcs_client.bucket("bench-plain").blob(uri.split("://", 1)[1]).upload_from_string(data)
        return len(data)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        plain_bytes = sum(pool.map(plain, files))
    plain_s = time.perf_counter() - started

    started = time.perf_counter()
    full = replication.replicate(settings)
    replica_s = time.perf_counter() - started
    assert full.bytes_copied == total_bytes == plain_bytes

    # Incremental: one new batch; the replica must move exactly the new bytes.
    before = {rel for rel in replication.live_files(source)}
    demo.write_demo(settings, files=1, rows=args.rows, seed=2)
    ingest_new()
    source.refresh()
    new_bytes = sum(f.file_size_in_bytes for rel, f in replication.live_files(source).items() if rel not in before)
    incremental = replication.replicate(settings)
    parity = replication.parity(settings, checksum_sample=None)
    assert parity.ok, parity.describe()

    results = {
        "benchmark": "replicate",
        "how_to_rerun": ".venv/bin/python bench/replicate/run.py --batches 6 --rows 4000 --dims 768",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": vars(args),
        "files": len(files),
        "bytes": total_bytes,
        "plain_upload_s": round(plain_s, 3),
        "replica_s": round(replica_s, 3),
        "plain_upload_mb_s": round(plain_bytes / plain_s / 1e6, 2),
        "replica_mb_s": round(full.bytes_copied / replica_s / 1e6, 2),
        "replica_vs_plain_throughput": round((full.bytes_copied / replica_s) / (plain_bytes / plain_s), 3),
        "incremental_bytes_moved": incremental.bytes_copied,
        "incremental_new_bytes": new_bytes,
        "incremental_moved_over_new": round(incremental.bytes_copied / new_bytes, 6) if new_bytes else None,
        "note": "replica time includes what plain upload skips: CRC32C of every source byte, the GCS checksum "
        "comparison and the Iceberg replica commit; both run against the same local stand-ins",
    }
    out = ROOT / "bench" / "results" / "replicate.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'files':<32}{len(files)}\n{'bytes':<32}{total_bytes}")
    for key in ("plain_upload_mb_s", "replica_mb_s", "replica_vs_plain_throughput", "incremental_moved_over_new"):
        print(f"{key:<32}{results[key]}")
    print(f"wrote {out}")
    for generator in (gcs, s3):
        generator.close()


if __name__ == "__main__":
    main()
