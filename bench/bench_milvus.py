"""Bench part for the Milvus store (row 10 of bench.py): the same synthetic chunks in both stores, the
file store and Milvus Lite started here on 127.0.0.1, and Retriever.search p50 on each with the same
query vectors and texts. Milvus fuses dense + BM25 on the server (one hybrid_search) and fetches the
chunks' rows in a second call; the file store does both in process."""

from __future__ import annotations

import hashlib
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench  # the helpers of bench/bench.py (this file is imported from it, with bench/ on sys.path)


def build(settings, n: int, identity: dict) -> float:
    """n synthetic chunks (10 per article, random unit vectors) written through the store's writer."""
    import numpy as np

    from rag.stores import store_writer
    from rag.types import Article, Chunk

    rng, nprng, words = random.Random(n), np.random.default_rng(n), bench.corpus_words()
    started = time.perf_counter()
    with store_writer(settings, rebuild=True) as writer:
        for a in range(n // 10):
            doc_id = f"syn_{a:06d}.txt"
            texts = [bench.sentences(rng, words, 5) for _ in range(10)]
            chunks, pos = [], 0
            for k, t in enumerate(texts):
                chunks.append(Chunk(f"{doc_id}:{pos}-{pos + len(t)}", doc_id, k, pos, pos + len(t), t, 120))
                pos += len(t) + 1
            vectors = nprng.standard_normal((10, identity["dim"]), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            text = " ".join(texts)
            article = Article(doc_id, text, f"Synthetic {a}", f"20{10 + a % 15}-01-01", "SYN",
                              content_hash=hashlib.sha256(text.encode()).hexdigest())
            writer.add(article, "/synthetic", "{}", chunks, vectors)
        writer.publish(identity, {"synthetic": True})
    return time.perf_counter() - started


def wait_for_milvus(settings, process: subprocess.Popen, deadline: float = 60.0) -> None:
    from rag.store_milvus import Milvus, forget_client
    from rag.stores import parse_store

    target, end = parse_store(settings.store), time.monotonic() + deadline
    while True:  # a refused connect fails at once: poll until it answers
        try:
            Milvus(target).call("listing", "list_collections")
            return
        except Exception:
            forget_client(target)
            if time.monotonic() > end or process.poll() is not None:
                raise
            time.sleep(0.2)


def p50s(settings, identity: dict, qvecs, texts: list[str], rounds: int = 3) -> list[float]:
    from rag.retrieve import Retriever
    from rag.stores import open_store

    reader = open_store(settings, identity)
    current = {"v": qvecs[0]}

    def embed(_texts):
        return current["v"][None, :]

    retriever = Retriever(reader, embed)
    retriever.search("warm up", k=6)
    out = []
    for _ in range(rounds):
        times = []
        for v, q in zip(qvecs, texts, strict=True):
            current["v"] = v
            t = time.perf_counter()
            retriever.search(q, k=6)
            times.append(time.perf_counter() - t)
        out.append(1000 * statistics.median(times))
    reader.close()
    return out


def milvus_search(work: str, n_chunks: str, queries: str) -> dict:
    import numpy as np

    from rag.config import Settings
    from rag.embed import embedder_dir, embedder_identity

    port = bench.free_port()
    launcher = Path(sys.executable).with_name("milvus-lite")
    # --host always: milvus-lite listens on every interface by default.
    milvus = subprocess.Popen([str(launcher), "server", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
                               str(Path(work) / "milvus-data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stores = {"files": Settings(index=str(Path(work) / "milvus-bench-index")),
                  "milvus": Settings(store=f"milvus://127.0.0.1:{port}/bench")}
        wait_for_milvus(stores["milvus"], milvus)
        identity = embedder_identity(embedder_dir(None))
        result: dict = {"chunks": int(n_chunks), "build_s": {}}
        for name, settings in stores.items():
            result["build_s"][name] = build(settings, int(n_chunks), identity)
        nprng, rng, words = np.random.default_rng(1), random.Random(1), bench.corpus_words()
        qvecs = nprng.standard_normal((int(queries), identity["dim"]), dtype=np.float32)
        qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
        texts = [" ".join(rng.sample(words, rng.randint(3, 9))) for _ in range(int(queries))]
        for name, settings in stores.items():
            result[f"{name}_p50_ms"] = p50s(settings, identity, qvecs, texts)
        return result
    finally:
        milvus.kill()
        milvus.wait(10)
