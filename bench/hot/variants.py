"""Index variants at one size, built once and cached: which graph storage and settings to serve with.

    .venv/bin/python bench/hot/variants.py SIZE VARIANTS EFS [QUERIES]
    .venv/bin/python bench/hot/variants.py 200000 flat-M32-c40,sq8-M32-c40+r20,fp16-M32-c40+r20 48,64,96

A variant is `{flat|sq8|sq8u|fp16|bf16}-M{M}-c{efConstruction}` (FAISS HNSW over float32, 8-bit, uniform
8-bit, fp16 or bf16 codes) or `hnswlib-M{M}c{efConstruction}`, with `+r{N}` for an exact float32 re-rank
of the best N candidates. Builds go to /tmp/nextesy-hot-cache; each line printed is one (variant, ef)
measurement, single-threaded queries, with the 1-minute load average. Results are appended under
"variants" in bench/results/hot.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from bench.hot.run import DIMS, RESULTS, K, percentiles, recall, vectors  # noqa: E402


def query_one(search, q: np.ndarray, rerank: int, data: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    q = q.reshape(1, -1)
    labels = search(q)
    if rerank:
        labels = labels[np.argsort(-(data[labels] @ q[0]))[:K]]
    return labels


def main() -> None:
    size = int(sys.argv[1])
    variants = sys.argv[2].split(",")
    efs = [int(e) for e in sys.argv[3].split(",")]
    nq = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    cache = Path("/tmp/nextesy-hot-cache")
    dpath = cache / f"data-{size}.npy"
    if dpath.exists():
        data = np.load(dpath)
    else:
        data = vectors(size, seed=1)
        np.save(dpath, data)
    queries = vectors(1000, seed=2)[:nq]
    tpath = cache / f"truth-{size}.npy"
    if tpath.exists():
        truth = np.load(tpath)[:nq]
    else:
        flat = faiss.IndexFlatIP(DIMS)
        flat.add(data)
        truth = flat.search(vectors(1000, seed=2), K)[1]
        np.save(tpath, truth)
        truth = truth[:nq]
        del flat

    def build(v):
        p = cache / f"{v}-{size}.idx"
        if v.startswith("hnswlib"):
            import hnswlib

            M = int(v.split("M")[1].split("c")[0])
            efc = int(v.split("c")[1])
            idx = hnswlib.Index(space="ip", dim=DIMS)
            if p.exists():
                idx.load_index(str(p), max_elements=size)
                return idx, None
            idx.init_index(max_elements=size, M=M, ef_construction=efc)
            t = time.perf_counter()
            idx.add_items(data, num_threads=2)
            bt = time.perf_counter() - t
            idx.save_index(str(p))
            return idx, bt
        if p.exists():
            return faiss.read_index(str(p)), 0.0
        kind, M, efc = v.split("-")[0], int(v.split("-")[1][1:]), int(v.split("-")[2][1:])
        if kind == "flat":
            idx = faiss.IndexHNSWFlat(DIMS, M, faiss.METRIC_INNER_PRODUCT)
        elif kind == "sq8":
            idx = faiss.IndexHNSWSQ(DIMS, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
        elif kind == "sq8u":
            idx = faiss.IndexHNSWSQ(DIMS, faiss.ScalarQuantizer.QT_8bit_uniform, M, faiss.METRIC_INNER_PRODUCT)
        elif kind == "fp16":
            idx = faiss.IndexHNSWSQ(DIMS, faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
        elif kind == "bf16":
            idx = faiss.IndexHNSWSQ(DIMS, faiss.ScalarQuantizer.QT_bf16, M, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = efc
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        if kind != "flat":
            idx.train(data)
        idx.add(data)
        bt = time.perf_counter() - t
        faiss.write_index(idx, str(p))
        return idx, bt

    for v in variants:
        rerank = 0
        if "+r" in v:
            v, rerank = v.split("+r")
            rerank = int(rerank)
        idx, bt = build(v)
        faiss.omp_set_num_threads(1)
        for ef in efs:
            if v.startswith("hnswlib"):
                idx.set_ef(ef)
                idx.set_num_threads(1)
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            kk = max(K, rerank)

            search = (
                (lambda q, idx=idx, kk=kk: idx.knn_query(q, k=kk)[0][0].astype(np.int64))
                if v.startswith("hnswlib")
                else (lambda q, idx=idx, kk=kk, params=params: idx.search(q, kk, params=params)[1][0])
            )
            for q in queries[:30]:
                query_one(search, q, rerank, data)
            lat, ans = [], []
            for q in queries:
                t = time.perf_counter()
                ans.append(query_one(search, q, rerank, data))
                lat.append(time.perf_counter() - t)
            row = {
                "size": size,
                "variant": v,
                "rerank": rerank,
                "ef_search": ef,
                "build_s": None if bt is None else round(bt, 1),  # None: the build was cached
                **percentiles(lat),
                "mean_ms": round(1000 * np.mean(lat), 3),
                "recall_at_10": round(recall(truth, np.asarray(ans)), 4),
                "load_1m": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(row), flush=True)
            results = json.loads(RESULTS.read_text())
            results.setdefault("variants", []).append(row)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
