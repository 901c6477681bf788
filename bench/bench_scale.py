"""Row 11 of `make bench` (issue 15, goal 3): `rag index` of 100k generated articles keeps memory
bounded, and a re-index of the same unchanged articles is quick.

The articles are generated from the sample corpus' words (about 12 sentences, 2 chunks each) in
folders of 1,000. Vectors come from a hash of each chunk's text instead of the model: embedding
half a million chunks for real takes hours on 2 cores, and the model's speed is row 5's figure.
Everything else is the real `index_paths`: reading, the real tokenizer's chunking, SQLite, FAISS,
the BM25 build, publishing. Each run is its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path

import numpy as np


class HashEmbedder:
    """Unit vectors seeded by each text's CRC32: the embedder's interface without the model's cost."""

    identity = {"name": "bench-hash", "fingerprint": "bench-hash", "dim": 384, "max_seq_length": 256,
                "normalized": True}

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(384, dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def write_many(folder: Path, count: int, seed: int, sentences, words: list[str]) -> None:
    rng = random.Random(seed)
    for i in range(count):
        sub = folder / f"batch-{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"a{i:06d}.txt").write_text(f"Generated article {i}\n\n{sentences(rng, words, 12)}\n", encoding="utf-8")


def index_run(folder: str, index: str) -> dict:
    """One `index_paths` over the folder with the hash embedder; what it did and how long it took."""
    from rag.config import load_settings
    from rag.embed import TokenCounter, embedder_dir
    from rag.indexer import index_paths

    started = time.perf_counter()
    summary = index_paths([folder], load_settings({"index": index}), embedder=HashEmbedder(),
                          counter=TokenCounter(embedder_dir(None)))
    return {"seconds": time.perf_counter() - started, "articles": summary.articles, "chunks": summary.chunks,
            "added": summary.added, "unchanged": summary.unchanged}
