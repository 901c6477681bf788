"""`make bench`: how fast rag is, each figure next to a floor measured in the same run.

Every figure is the median of several runs (min and max beside it), because these machines are
shared and noisy. A floor is the same work done the shortest way we know: a bare script that only
loads the GGUF and generates the same tokens, raw SentenceTransformer.encode of the same chunk
texts, and so on. The ratio says how much rag adds. Results: a table on stdout and
bench/report.json. Heavy parts run in subprocesses (`bench.py --part NAME`) so that each starts
cold and its peak memory is its own. Takes about 15-20 minutes on 2 cores (the 1M-chunk and 100k-article
rows are most of it).

    python bench/bench.py [--runs N] [--quick]   (--quick: 10k synthetic chunks only, fewer runs)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
RAG = [str(Path(PY).parent / "rag")] if (Path(PY).parent / "rag").is_file() else [PY, "-m", "rag.cli"]
QUESTION = "What did the US urge Pakistan to do?"
OTHER_QUESTION = "How many civilians were killed in the terrorist attack in Pahalgam?"
REPORT = ROOT / "bench" / "report.json"


# --- small helpers ---------------------------------------------------------------------------------


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_process(argv: list[str], **kwargs) -> tuple[float, float, int, str]:
    """(wall seconds from start to exit, peak RSS in MB, exit code, stdout) of one cold process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kwargs)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode, out


def part(name: str, *args: str) -> dict:
    """Run `bench.py --part NAME ARGS` in a fresh interpreter; its last stdout line is JSON."""
    wall, rss, code, out = run_process([PY, __file__, "--part", name, *args], cwd=ROOT)
    if code != 0:
        raise SystemExit(f"bench part {name} failed (exit {code}); run `{PY} {__file__} --part {name} "
                         f"{' '.join(args)}` to see why")
    result = json.loads(out.strip().splitlines()[-1])
    result.setdefault("peak_rss_mb", rss)
    return result


def settings(index: str, **overrides):
    from rag.config import load_settings

    return load_settings({"index": index, **overrides})


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import llama_cpp

    from rag.llm import default_threads, physical_cores

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(), "cpu": model,
            "physical_cores": physical_cores(), "threads_used": default_threads(),
            "python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "load_average_start": os.getloadavg()}


# --- generated data ----------------------------------------------------------------------------------


def corpus_words() -> list[str]:
    return " ".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "eval/corpus").glob("*.txt"))).split()


def sentences(rng: random.Random, words: list[str], n: int, lo: int = 8, hi: int = 28) -> str:
    out = []
    for _ in range(n):
        start = rng.randrange(len(words) - hi)
        out.append(" ".join(words[start:start + rng.randint(lo, hi)]).rstrip(".") + ".")
    return " ".join(out)


def write_articles(folder: Path, count: int, n_sentences: int, seed: int) -> None:
    rng, words = random.Random(seed), corpus_words()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"gen_{i:05d}.txt").write_text(f"Generated article {i}\n\n{sentences(rng, words, n_sentences)}\n",
                                                 encoding="utf-8")


def link_export(src_index: Path, dest_index: Path) -> None:
    """Give a new index the ONNX export of an existing one, as if `rag index` had made it."""
    dest_index.mkdir(parents=True, exist_ok=True)
    for f in src_index.glob("embedder-*.onnx"):
        target = dest_index / f.name
        if not target.exists():
            os.link(f, target)


# --- parts that run in their own process ------------------------------------------------------------


def part_capture(index: str) -> dict:
    """Answer QUESTION once in llm mode and record the exact prompt and how many tokens were decoded."""
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings(index, mode="llm"))
    llm = pipeline.llm
    seen = {}
    original = llm.stream_chat

    def recording(messages, config):
        seen["messages"], seen["max_tokens"] = messages, config.max_tokens
        return original(messages, config)

    llm.stream_chat = recording
    answer = pipeline.ask(QUESTION)
    prompt = llm._formatter(messages=seen["messages"]).prompt
    n_prompt = llm.count_chat_tokens(seen["messages"])
    return {"prompt": prompt, "n_prompt": n_prompt, "n_decoded": llm._llama.n_tokens - n_prompt,
            "n_ctx": llm.n_ctx, "threads": llm.n_threads, "model": str(llm.path), "abstained": answer.abstained,
            "timings_ms": answer.timings_ms}


FLOOR_SCRIPT = '''
import sys, json
import llama_cpp
from rag.llm import _no_amx_repack  # llama.cpp segfaults on this CPU's AMX path without it
spec = json.load(open(sys.argv[1]))
with _no_amx_repack():
    llm = llama_cpp.Llama(model_path=spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], n_batch=spec["n_ctx"], n_ubatch=spec["n_ctx"],
                          verbose=False)
tokens = llm.tokenize(spec["prompt"].encode(), add_bos=False, special=True)
llm.eval(tokens)
for _ in range(spec["n_decoded"]):
    llm.eval([llm.sample(top_k=1, temp=0.0)])
'''

EXTRACTIVE_FLOOR = '''
import sys
import numpy as np, onnxruntime
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
tok.no_padding()
enc = tok.encode(sys.argv[3])
ids = np.asarray([enc.ids], dtype=np.int64)
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
'''

NOOP_FLOOR = '''
import hashlib, os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            hashlib.sha256(f.read()).hexdigest()
'''


def part_warm(index: str, runs: str) -> dict:
    """Chat-like use of one Pipeline: the same question again, another question, decode speed."""
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings(index, mode="llm"))

    def ask(question: str) -> tuple[float, float, dict]:
        started = time.perf_counter()
        first = []
        answer = pipeline.ask(question, on_token=lambda _: first or first.append(time.perf_counter()))
        total = time.perf_counter() - started
        return (first[0] - started) if first else total, total, answer.timings_ms

    ask(QUESTION)  # turn 1: loads the model and fills the KV cache
    firsts, totals, decode = [], [], []
    for _ in range(int(runs)):
        f, t, timings = ask(QUESTION)
        firsts.append(f)
        totals.append(t)
        tokens = timings.get("tokens_per_s", 0) * timings.get("generate", 0) / 1000
        if tokens > 1:
            decode.append((tokens - 1) / max((timings["generate"] - timings["first_token"]) / 1000, 1e-6))
    other_first = []
    for _ in range(int(runs)):
        other_first.append(ask(OTHER_QUESTION)[0])
        ask(QUESTION)
    # Floors on the same loaded model: llama-cpp-python's low-level eval/sample loop.
    llama = pipeline.llm._llama
    capture = part_capture_prompt(pipeline)
    tokens = llama.tokenize(capture["prompt"].encode(), add_bos=False, special=True)
    n = max(capture["n_decoded"], 8)
    floor_first, floor_total, floor_rate = [], [], []
    for _ in range(int(runs)):
        llama.reset()
        llama.eval(tokens[:-1])  # the prompt is cached, as in the second ask of the same question
        started = time.perf_counter()
        llama.eval(tokens[-1:])
        llama.sample(top_k=1, temp=0.0)
        floor_first.append(time.perf_counter() - started)
        for _ in range(n):
            llama.eval([llama.sample(top_k=1, temp=0.0)])
        total = time.perf_counter() - started
        floor_total.append(total)
        floor_rate.append(n / (total - floor_first[-1]))
    return {"first": firsts, "total": totals, "other_first": other_first, "decode_tps": decode,
            "floor_first": floor_first, "floor_total": floor_total, "floor_tps": floor_rate}


def part_capture_prompt(pipeline) -> dict:
    llm = pipeline.llm
    seen = {}
    original = llm.stream_chat

    def recording(messages, config):
        seen["messages"] = messages
        return original(messages, config)

    llm.stream_chat = recording
    pipeline.ask(QUESTION)
    llm.stream_chat = original
    n_prompt = llm.count_chat_tokens(seen["messages"])
    return {"prompt": llm._formatter(messages=seen["messages"]).prompt, "n_decoded": llm._llama.n_tokens - n_prompt}


def part_index_speed(articles: str, export_from: str, work: str, runs: str) -> dict:
    """rag's indexing vs raw SentenceTransformer.encode of the same chunk texts (imports excluded from both).

    Both load their model in every run (rag: the int8 ONNX session that `export_from`'s `rag index`
    made, linked in as a first `rag index` would have made it; the export itself is once per index)."""
    import sentence_transformers  # noqa: F401  (import cost is not indexing speed)

    from rag.chunking import chunk_text
    from rag.embed import TokenCounter, embedder_dir
    from rag.indexer import index_paths
    from rag.ingest import scan

    model_dir = embedder_dir(None)
    s = settings(str(Path(work) / "unused"))
    counter = TokenCounter(model_dir)
    texts = [c.text for a in scan([articles]).articles
             for c in chunk_text(a.doc_id, a.text, counter, s.chunk_tokens, s.chunk_overlap)]
    raw, ours = [], []
    for i in range(int(runs)):
        started = time.perf_counter()
        model = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        raw.append(time.perf_counter() - started)
        del model
        index = Path(work) / f"speed-{i}"
        link_export(Path(export_from), index)
        started = time.perf_counter()
        summary = index_paths([articles], settings(str(index)))
        ours.append(time.perf_counter() - started)
        assert summary.chunks_embedded == len(texts), (summary.chunks_embedded, len(texts))
        state = index / (index / "CURRENT").read_text().strip()
        precision = json.loads((state / "manifest.json").read_text())["embedder"].get("precision", "fp32")
        shutil.rmtree(index)
    return {"chunks": len(texts), "raw_s": raw, "rag_s": ours, "precision": precision}


def part_build_synthetic(index: str, n_chunks: str) -> dict:
    """A synthetic index straight through IndexWriter: random unit vectors, generated texts."""
    import numpy as np

    from rag.embed import embedder_dir, embedder_identity
    from rag.store import IndexWriter
    from rag.types import Article, Chunk

    n = int(n_chunks)
    rng, nprng, words = random.Random(n), np.random.default_rng(n), corpus_words()
    identity = embedder_identity(embedder_dir(None))
    per_article = 10
    started = time.perf_counter()
    with IndexWriter(index, rebuild=True) as writer:
        for a in range(n // per_article):
            doc_id = f"syn_{a:06d}.txt"
            texts = [sentences(rng, words, 5) for _ in range(per_article)]
            text = " ".join(texts)
            chunks, pos = [], 0
            for k, t in enumerate(texts):
                chunks.append(Chunk(f"{doc_id}:{pos}-{pos + len(t)}", doc_id, k, pos, pos + len(t), t, 120))
                pos += len(t) + 1
            vectors = nprng.standard_normal((per_article, identity["dim"]), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            article = Article(doc_id, text, f"Synthetic {a}", f"20{10 + a % 15}-01-01", "SYN",
                              content_hash=hashlib.sha256(text.encode()).hexdigest())
            writer.add(article, "/synthetic", "{}", chunks, vectors)
        built = time.perf_counter()
        writer.publish(identity, {"synthetic": True})  # builds and saves the BM25 index too
    return {"write_s": built - started, "publish_s": time.perf_counter() - built}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def part_search(index: str, queries: str) -> dict:
    """Retriever.search (dense + lexical + fusion + duplicate collapse) with precomputed query vectors."""
    import resource

    import bm25s  # noqa: F401  (imported before measuring: library code is not per-chunk memory)
    import faiss  # noqa: F401
    import numpy as np

    from rag.retrieve import Retriever
    from rag.store import open_index

    before = rss_mb()
    started = time.perf_counter()
    reader = open_index(index)
    nprng, rng, words = np.random.default_rng(1), random.Random(1), corpus_words()
    qvecs = nprng.standard_normal((int(queries), reader.manifest["embedder"]["dim"]), dtype=np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    current = {"v": qvecs[0]}
    retriever = Retriever(reader, lambda texts: current["v"][None, :])
    retriever.search("warm up the lexical index", k=6)
    first = time.perf_counter() - started
    times = []
    for i in range(int(queries)):
        current["v"] = qvecs[i]
        q = " ".join(rng.sample(words, rng.randint(3, 9)))
        t = time.perf_counter()
        retriever.search(q, k=6)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times.sort()
    return {"open_and_first_s": first, "p50_ms": 1000 * times[len(times) // 2],
            "p95_ms": 1000 * times[int(len(times) * 0.95) - 1], "memory_mb": peak - before}


def part_threads(model: str) -> dict:
    """Decode and prefill speed with 1 and 2 threads, idle and beside one busy process."""
    import llama_cpp

    from rag.llm import _no_amx_repack

    prompt = ("<|im_start|>system\nAnswer from the sources.<|im_end|>\n<|im_start|>user\n"
              + " ".join(corpus_words()[:300]) + "\nWhat did the US urge Pakistan to do?<|im_end|>\n"
              "<|im_start|>assistant\n")
    out = {}
    models = {}
    for threads in (1, 2):
        with _no_amx_repack():
            models[threads] = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=threads,
                                              n_threads_batch=threads, n_batch=1024, n_ubatch=1024, verbose=False)
    for busy in (False, True):
        hog = subprocess.Popen([PY, "-c", "while True: pass"]) if busy else None
        try:
            for threads, llm in models.items():
                for _ in range(2):
                    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
                    llm.reset()
                    t = time.perf_counter()
                    llm.eval(tokens)
                    prefill = len(tokens) / (time.perf_counter() - t)
                    t = time.perf_counter()
                    for _ in range(32):
                        llm.eval([llm.sample(top_k=1, temp=0.0)])
                    key = f"{'busy' if busy else 'idle'}_threads{threads}"
                    out.setdefault(key, {"prefill_tps": [], "decode_tps": []})
                    out[key]["prefill_tps"].append(prefill)
                    out[key]["decode_tps"].append(32 / (time.perf_counter() - t))
        finally:
            if hog:
                hog.kill()
                hog.wait()
    return out


def part_quants(model: str, work: str) -> dict:
    """Requantise the default GGUF locally (no downloads) and time prefill and decode per type."""
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    from rag.llm import _no_amx_repack, default_threads

    prompt = " ".join(corpus_words()[:400])
    types = {"Q4_1 (shipped)": None, "Q4_0": capi.LLAMA_FTYPE_MOSTLY_Q4_0, "Q8_0": capi.LLAMA_FTYPE_MOSTLY_Q8_0,
             "Q4_K_M": capi.LLAMA_FTYPE_MOSTLY_Q4_K_M, "F16": capi.LLAMA_FTYPE_MOSTLY_F16}
    out = {}
    for name, ftype in types.items():
        path = model
        if ftype is not None:
            path = str(Path(work) / f"model-{name}.gguf")
            params = capi.llama_model_quantize_default_params()
            params.ftype, params.allow_requantize, params.nthread = ftype, True, 2
            if capi.llama_model_quantize(model.encode(), path.encode(), params) != 0:
                continue
        threads = default_threads()
        with _no_amx_repack():
            llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                                  n_batch=1024, n_ubatch=1024, verbose=False)
        tokens = llm.tokenize(prompt.encode(), add_bos=False)[:600]
        prefill, decode = [], []
        for _ in range(3):
            llm.reset()
            t = time.perf_counter()
            llm.eval(tokens)
            prefill.append(len(tokens) / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(32):
                llm.eval([llm.sample(top_k=1, temp=0.0)])
            decode.append(32 / (time.perf_counter() - t))
        out[name] = {"size_mb": Path(path).stat().st_size / 2**20, "prefill_tps": statistics.median(prefill),
                     "decode_tps": statistics.median(decode)}
        llm.close()
    return out


PAGE = (
    '<!doctype html><html><head><title>{title} | Bench Gazette</title>'
    '<meta property="og:site_name" content="Bench Gazette">'
    '<meta property="article:published_time" content="2024-05-{day:02d}">'
    '<script type="application/ld+json">{{"@type": "NewsArticle", "headline": "{title}", '
    '"datePublished": "2024-05-{day:02d}"}}</script></head><body>'
    '<nav><a href="/">Home</a> <a href="/world">World</a> <a href="/sport">Sport</a></nav>'
    '<div class="cookie">We use cookies to improve your experience. Accept all cookies.</div>'
    '<article><h1>{title}</h1><p class="byline">By Staff Reporter</p>{paragraphs}</article>'
    '<aside><h2>Related stories</h2><ul><li><a href="/a">Another story</a></li>'
    '<li><a href="/b">More news</a></li></ul></aside>'
    '<div class="paywall">Subscribe now for unlimited access.</div>'
    '<footer>Copyright Bench Gazette. All rights reserved.</footer></body></html>'
)


def write_pages(folder: Path, count: int, seed: int) -> None:
    """Saved news pages with the usual boilerplate around 5-8 paragraphs of generated text."""
    rng, words = random.Random(seed), corpus_words()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        paragraphs = "".join(f"<p>{sentences(rng, words, 3)}</p>" for _ in range(rng.randint(5, 8)))
        title = sentences(rng, words, 1, 5, 9).rstrip(".")
        (folder / f"page_{i:05d}.html").write_text(PAGE.format(title=title, day=1 + i % 28, paragraphs=paragraphs))


def part_html_speed(pages: str) -> dict:
    """Pages/s through rag's HTML reader (scan: read, extract, metadata) vs bare trafilatura.extract(with_metadata)."""
    import trafilatura

    from rag.ingest import scan

    files = sorted(Path(pages).glob("*.html"))
    started = time.perf_counter()
    articles = scan([pages]).articles
    ours = time.perf_counter() - started
    assert len(articles) == len(files), (len(articles), len(files))
    started = time.perf_counter()
    for f in files:
        trafilatura.extract(f.read_bytes(), with_metadata=True)
    bare = time.perf_counter() - started
    return {"pages": len(files), "rag_s": ours, "bare_s": bare}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gold_questions(n: int) -> list[str]:
    lines = (ROOT / "eval" / "gold.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()]
    return [questions[i % len(questions)] for i in range(n)]


def start_server(index: str, mode: str, env: dict) -> tuple[subprocess.Popen, str]:
    """A real `rag serve` on a free loopback port, once /healthz answers."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([*RAG, "serve", "--index", index, "--port", str(port), "--mode", mode], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("rag serve did not come up within 120 s")


def ask_server(url: str, question: str, mode: str) -> tuple[float, bool]:
    """(seconds, ok) of one POST /v1/ask."""
    import urllib.request

    body = json.dumps({"question": question, "mode": mode}).encode()
    request = urllib.request.Request(url + "/v1/ask", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            ok = response.status == 200 and "answer" in json.loads(response.read())
    except OSError:
        ok = False
    return time.perf_counter() - started, ok


def serve_load(url: str, mode: str, clients: int, questions: list[str]) -> dict:
    """Every question once, `clients` at a time: latencies, errors, requests/s, and one request alone."""
    from concurrent.futures import ThreadPoolExecutor

    ask_server(url, questions[0], mode)  # warm
    alone = [ask_server(url, q, mode)[0] for q in questions[:5]]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda q: ask_server(url, q, mode), questions))
    wall = time.perf_counter() - started
    seconds = sorted(s for s, _ in results)
    return {"alone_p50_s": statistics.median(alone), "p50_s": statistics.median(seconds),
            "p95_s": seconds[int(0.95 * (len(seconds) - 1))], "rps": len(results) / wall,
            "errors": sum(1 for _, ok in results if not ok), "n": len(results)}


# --- 1M chunks: the approximate vector index (rag.vector_index) --------------------------------------

ANN_PER_ARTICLE = 5  # synthetic chunks per synthetic article
ANN_CHUNK_SPREAD = 0.75  # chunk = article + 0.75 * noise: same-article cosine 0.66, as in the real chunks
ANN_BLOCK = 10_000  # vectors generated and added at a time


def real_vectors(index: str) -> tuple:
    """(chunk vectors, question vectors) of the real sample sets, from the real embedder (its ONNX
    export in `index`, the one `rag ask` uses): eval/corpus + eval/news chunks, both gold files."""
    from rag.chunking import chunk_text
    from rag.embed import TokenCounter, embedder_dir
    from rag.ingest import scan
    from rag.query_embed import query_embedder

    model_dir = embedder_dir(None)
    s = settings(str(Path(index) / "unused"))
    counter = TokenCounter(model_dir)
    texts = [c.text for folder in ("eval/corpus", "eval/news/articles") for a in scan([str(ROOT / folder)]).articles
             for c in chunk_text(a.doc_id, a.text, counter, s.chunk_tokens, s.chunk_overlap)]
    questions = [json.loads(line)["question"] for name in ("eval/gold.jsonl", "eval/news/gold.jsonl")
                 for line in (ROOT / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    embedder = query_embedder(index, model_dir)
    return embedder.embed(texts), embedder.embed(questions)


def part_ann_build(index: str, out: str, n_chunks: str) -> dict:
    """1M synthetic chunk vectors shaped like the real ones, built into rag's vector index as
    `rag index` builds it (exact up to the threshold, then IVF-SQ8, retrained as it grows).

    The real chunk vectors are mixed in at random ids; the real gold questions and synthetic
    questions (a stored article's vector plus noise) are the queries, with their exact top 10 over
    all n vectors. Synthetic vectors: a Gaussian fitted to the real chunk and question vectors
    (mean + covariance, shrunk by 10% towards isotropic) gives article centres; each article has
    ANN_PER_ARTICLE chunks around its centre, normalised. Uniform random unit vectors would be a
    worst case for IVF and unlike any text embedding; this keeps the real mean direction, spectrum
    and same-article / other-article cosines (0.66 / 0.09 here, 0.66 / 0.13 in the real chunks).
    """
    import faiss
    import numpy as np

    from rag.llm import default_threads
    from rag.vector_index import Policy, describe, maintain, new_exact

    n = int(n_chunks)
    chunks, questions = real_vectors(index)
    sample = np.vstack([chunks, questions]).astype(np.float64)
    mean, cov = sample.mean(axis=0), np.cov(sample, rowvar=False)
    cov += 0.1 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    mean, factor = mean.astype(np.float32), np.linalg.cholesky(cov).astype(np.float32).T
    d, rng = len(mean), np.random.default_rng(15)
    real_ids = np.sort(rng.choice(n, len(chunks), replace=False)) + 1  # chunk ids start at 1
    n_syn_q = 200
    queries = np.vstack([questions, np.zeros((n_syn_q, d), np.float32)])
    top_s = np.full((len(queries), 10), -np.inf, np.float32)
    top_i = np.zeros((len(queries), 10), np.int64)
    ftop_s, ftop_i = top_s.copy(), top_i.copy()  # the same, among every 10th chunk id (a 10% filter)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building: every core
    vectors_index = new_exact(d)
    gen_s = gt_s = add_s = 0.0
    started = time.perf_counter()
    switches = []
    for start in range(0, n, ANN_BLOCK):
        t = time.perf_counter()
        m = min(ANN_BLOCK, n - start)
        articles = mean + rng.standard_normal((m // ANN_PER_ARTICLE, d), dtype=np.float32) @ factor
        block = np.repeat(articles, ANN_PER_ARTICLE, axis=0) + ANN_CHUNK_SPREAD * (
            rng.standard_normal((m, d), dtype=np.float32) @ factor)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        ids = np.arange(start + 1, start + m + 1, dtype=np.int64)
        here = real_ids[(real_ids >= ids[0]) & (real_ids <= ids[-1])]
        block[here - ids[0]] = chunks[np.searchsorted(real_ids, here)]
        if start == 0:  # synthetic questions: about articles of the first block, known before any truth
            about = articles[rng.choice(len(articles), n_syn_q, replace=False)]
            v = about + ANN_CHUNK_SPREAD * (rng.standard_normal((n_syn_q, d), dtype=np.float32) @ factor)
            queries[len(questions):] = v / np.linalg.norm(v, axis=1, keepdims=True)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()  # exact top 10 over everything so far
        scores, idx = faiss.knn(queries, block, 10, metric=faiss.METRIC_INNER_PRODUCT)
        all_s, all_i = np.hstack([top_s, scores]), np.hstack([top_i, idx + start + 1])
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
        top_s, top_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
        kept = np.flatnonzero(ids % 10 == 1)
        scores, idx = faiss.knn(queries, block[kept], 10, metric=faiss.METRIC_INNER_PRODUCT)
        all_s, all_i = np.hstack([ftop_s, scores]), np.hstack([ftop_i, ids[kept][idx]])
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
        ftop_s, ftop_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
        gt_s += time.perf_counter() - t
        t = time.perf_counter()  # what IndexWriter.add does: add, then maybe switch or retrain
        vectors_index.add_with_ids(block, ids)
        before = getattr(vectors_index, "nlist", 0)
        vectors_index = maintain(vectors_index)
        if getattr(vectors_index, "nlist", 0) != before:
            switches.append({"at": int(vectors_index.ntotal), "nlist": int(vectors_index.nlist),
                             "s": round(time.perf_counter() - t, 1)})
        add_s += time.perf_counter() - t
    t = time.perf_counter()
    faiss.write_index(vectors_index, out)
    write_s = time.perf_counter() - t
    np.savez(out + ".queries.npz", queries=queries, truth=top_i, filtered_truth=ftop_i,
             n_real=np.int64(len(questions)))
    faiss.omp_set_num_threads(default_threads())
    return {"n": n, "real_chunks": len(chunks), "real_questions": len(questions), "synthetic_questions": n_syn_q,
            "build_s": add_s + write_s, "add_and_train_s": add_s, "write_s": write_s, "switches": switches,
            "generate_s": gen_s, "truth_s": gt_s, "total_s": time.perf_counter() - started,
            "threshold": Policy.from_env().threshold, "index": describe(vectors_index),
            "file_mb": Path(out).stat().st_size / 2**20}


def part_ann_search(path: str, runs: str, detail: str = "1") -> dict:
    """Open the 1M index cold and search it as IndexReader._dense does: p50, recall@10, RSS.

    Wall times are what a user waits on this shared machine; CPU times (thread_time) are the same
    searches without the other processes' share. Memory: this process's RSS after reading the
    index and searching (Python, numpy and faiss included: the whole cost of holding 1M chunks'
    vectors) and its growth from reading the file.
    """
    import faiss
    import numpy as np

    from rag.llm import default_threads
    from rag.vector_index import FILTER_WIDEN, kind, search

    data = np.load(path + ".queries.npz")
    queries, truth, n_real = data["queries"], data["truth"], int(data["n_real"])
    before = rss_mb()
    t = time.perf_counter()
    index = faiss.read_index(path)
    open_s = time.perf_counter() - t
    faiss.omp_set_num_threads(default_threads())

    def timed(allowed=None, widen=None, qs=queries) -> tuple[list, list, list]:
        wall, cpu, found = [], [], []
        for q in qs:
            t, c = time.perf_counter(), time.thread_time()
            found.append(search(index, q, 10, allowed, widen)[1])
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - t)
        return wall, cpu, found

    def recall(found, want) -> float:
        return float(np.mean([len(set(f.tolist()) & set(g.tolist())) / 10 for f, g in zip(found, want, strict=True)]))

    wall, cpu = [], []
    for _ in range(int(runs)):
        w, c, found = timed()
        wall += w
        cpu += c
    result = {"kind": kind(index), "nlist": int(index.nlist), "nprobe": int(index.nprobe), "open_s": open_s,
              "p50_ms": 1000 * statistics.median(wall), "p95_ms": 1000 * sorted(wall)[int(0.95 * len(wall))],
              "cpu_p50_ms": 1000 * statistics.median(cpu),
              "recall_real": recall(found[:n_real], truth[:n_real]),
              "recall_synthetic": recall(found[n_real:], truth[n_real:]), "rss_mb": rss_mb(),
              "index_rss_mb": rss_mb() - before}
    if detail != "1":
        return result
    sweep = {}  # the evidence for PROBE_FRACTION: recall and times at other nprobe
    default_nprobe = index.nprobe
    for fraction in (16, 8, 6, 4):
        index.nprobe = max(1, index.nlist // fraction)
        w, c, found = timed()
        sweep[f"nlist/{fraction}"] = {"nprobe": int(index.nprobe), "p50_ms": 1000 * statistics.median(w),
                                      "cpu_p50_ms": 1000 * statistics.median(c),
                                      "recall_real": recall(found[:n_real], truth[:n_real]),
                                      "recall_synthetic": recall(found[n_real:], truth[n_real:])}
    index.nprobe = default_nprobe
    result["nprobe_sweep"] = sweep
    if "filtered_truth" in data:  # a filter keeping every 10th chunk id (as a date or publisher filter)
        allowed = np.arange(1, index.ntotal + 1, 10, dtype=np.int64)
        filtered = {}
        for widen in (1, 2, 4, None):  # the evidence for FILTER_WIDEN (None: up to every list)
            w, c, found = timed(allowed, widen, queries[:120])
            filtered[f"widen {widen or 'uncapped'}"] = {"p50_ms": 1000 * statistics.median(w),
                                          "cpu_p50_ms": 1000 * statistics.median(c),
                                          "recall": recall(found, data["filtered_truth"][:120])}
        result["filtered_10pct"] = filtered
        result["filtered_default"] = filtered[f"widen {FILTER_WIDEN or 'uncapped'}"]
    return result


PARTS = {"html-speed": part_html_speed, "capture": part_capture, "warm": part_warm, "index-speed": part_index_speed,
         "build-synthetic": part_build_synthetic, "search": part_search, "threads": part_threads,
         "quants": part_quants, "ann-build": part_ann_build, "ann-search": part_ann_search}


def part_milvus_search(work: str, n_chunks: str, queries: str) -> dict:
    """Row 10: the Milvus store vs the file store on the same chunks (bench/bench_milvus.py)."""
    from bench_milvus import milvus_search

    return milvus_search(work, n_chunks, queries)


PARTS["milvus-search"] = part_milvus_search


def part_scale_index(folder: str, index: str) -> dict:
    """Row 11: one `index_paths` over 100k generated articles (bench/bench_scale.py)."""
    from bench_scale import index_run

    return index_run(folder, index)


PARTS["scale-index"] = part_scale_index


# --- the benchmark ------------------------------------------------------------------------------------


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, values: list[float], unit: str, goal: str = "", floor: list[float] | None = None,
            ratio_of=None, met: bool | None = None, note: str = "") -> dict:
        row = {"name": name, "unit": unit, **stats(values), "goal": goal, "note": note}
        if floor:
            row["floor"] = stats(floor)
            row["ratio"] = ratio_of(row["median"], row["floor"]["median"])
        row["met"] = met
        self.rows.append(row)
        print(self.format(row), flush=True)
        return row

    @staticmethod
    def header() -> str:
        return (f"{'measure':<46} {'median':>9} {'min':>9} {'max':>9} {'floor':>9} {'ratio':>6}  "
                f"{'goal':<22} met")

    @staticmethod
    def format(row: dict) -> str:
        def num(x):
            return f"{x:9.3f}" if abs(x) < 100 else f"{x:9.0f}"

        floor = num(row["floor"]["median"]) if "floor" in row else f"{'':>9}"
        ratio = f"{row['ratio']:6.2f}" if "ratio" in row else f"{'':>6}"
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        return (f"{row['name'] + ' (' + row['unit'] + ')':<46} {num(row['median'])} {num(row['min'])} "
                f"{num(row['max'])} {floor} {ratio}  {row['goal']:<22} {met}")


def ann_rows(table: Table, extra: dict, index: Path, work: Path, ann_n: int) -> None:
    """Row 6, approximate: build ann_n synthetic chunk vectors as `rag index` would (part ann-build),
    then search them cold three times (part ann-search; the first also sweeps nprobe and filters)."""
    ann_label = f"{ann_n // 1000}k" if ann_n < 1_000_000 else "1M"
    ann_file = work / "ann.faiss"
    ann = part("ann-build", str(index), str(ann_file), str(ann_n))
    extra["ann_build"] = ann
    found = [part("ann-search", str(ann_file), "2", "1" if i == 0 else "0") for i in range(3)]
    extra["ann_search"] = found
    at_goal = ann_n == 1_000_000
    kind = f"{ann['index']['type']} nlist {ann['index'].get('nlist')} nprobe {ann['index'].get('nprobe')}"
    p50 = [f["p50_ms"] for f in found]
    table.add(f"6 ANN {ann_label} chunks: search p50", p50, "ms", "p50<=20 ms" if at_goal else "(info)",
              met=statistics.median(p50) <= 20 if at_goal else None,
              note=f"{kind}; CPU p50 {statistics.median([f['cpu_p50_ms'] for f in found]):.1f} ms")
    real = [f["recall_real"] for f in found]
    table.add(f"6 ANN {ann_label}: recall@10, real questions", real, "recall",
              ">=0.95" if at_goal else "(info)", met=statistics.median(real) >= 0.95 if at_goal else None,
              note=f"{ann['real_questions']} gold questions vs exact search over all {ann_n} vectors")
    table.add(f"6 ANN {ann_label}: recall@10, synthetic q.", [f["recall_synthetic"] for f in found],
              "recall", "(info)")
    memory = [f["rss_mb"] for f in found]
    table.add(f"6 ANN {ann_label} chunks: memory, RSS", memory, "MB", "<=1024 MB" if at_goal else "(info)",
              met=statistics.median(memory) <= 1024 if at_goal else None,
              note=f"index file {ann['file_mb']:.0f} MB; exact float32 would be {ann_n * 1540 / 1e6:.0f} MB")
    table.add(f"6 ANN {ann_label} chunks: build time", [ann["build_s"]], "s", "(report)",
              note="add + switch/retrain + write: " + ", ".join(
                  f"nlist {w['nlist']} at {w['at']} ({w['s']} s)" for w in ann["switches"]))
    if "filtered_default" in found[0]:
        table.add(f"6 ANN {ann_label} chunks: 10% filter p50", [found[0]["filtered_default"]["p50_ms"]],
                  "ms", "(info)", note=f"recall@10 among the allowed: {found[0]['filtered_default']['recall']:.3f}")
    ann_file.unlink(missing_ok=True)
    Path(str(ann_file) + ".queries.npz").unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each cold-process figure")
    parser.add_argument("--quick", action="store_true", help="10k synthetic chunks only, 3 runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](*args.args)))
        return 0
    runs = 3 if args.quick else args.runs
    sizes = [10_000] if args.quick else [10_000, 100_000]
    bench_started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    info = machine()
    print(f"rag bench {info['date']}  nproc={info['nproc']}  {info['cpu']}  threads={info['threads_used']}  "
          f"load={info['load_average_start'][0]:.2f}  work={work}", flush=True)
    table = Table()
    extra: dict = {}
    try:
        index = work / "index"
        t = time.perf_counter()
        subprocess.run([*RAG, "index", str(ROOT / "eval/corpus"), "--index", str(index)], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        extra["setup_index_s"] = time.perf_counter() - t
        capture = part("capture", str(index))
        extra["prompt_tokens"], extra["decoded_tokens"] = capture["n_prompt"], capture["n_decoded"]
        spec = work / "floor.json"
        spec.write_text(json.dumps(capture))
        (work / "floor.py").write_text(FLOOR_SCRIPT)
        print(f"prompt {capture['n_prompt']} tokens, {capture['n_decoded']} decoded; "
              f"model {Path(capture['model']).name}; n_ctx {capture['n_ctx']}\n", flush=True)
        print(Table.header())

        # 1 + 7: cold `rag ask` vs a bare script that loads the GGUF and decodes the same tokens.
        ask, floor, rss = [], [], []
        for _ in range(runs):
            wall, peak, code, _ = run_process([*RAG, "ask", QUESTION, "--index", str(index), "--json"], env=env)
            assert code in (0, 3), f"rag ask exited {code}"
            ask.append(wall)
            rss.append(peak)
            floor.append(run_process([PY, str(work / "floor.py"), str(spec)], env=env)[0])
        table.add("1 cold rag ask (llm)", ask, "s", "ratio<=1.5, <=2.0 s", floor, lambda a, b: a / b,
                  met=statistics.median(ask) / statistics.median(floor) <= 1.5 and statistics.median(ask) <= 2.0)

        # 2: cold extractive ask vs loading the ONNX embedder and embedding the question.
        onnx = next(index.glob("embedder-*.onnx"))
        from rag.embed import embedder_dir

        (work / "xfloor.py").write_text(EXTRACTIVE_FLOOR)
        xask, xfloor = [], []
        for _ in range(runs):
            wall, _, code, _ = run_process([*RAG, "ask", QUESTION, "--mode", "extractive", "--index", str(index),
                                            "--json"], env=env)
            xask.append(wall)
            xfloor.append(run_process([PY, str(work / "xfloor.py"), str(onnx),
                                       str(embedder_dir(None) / "tokenizer.json"), QUESTION], env=env)[0])
        table.add("2 cold rag ask --mode extractive", xask, "s", "<=1.0 s", xfloor, lambda a, b: a / b,
                  met=statistics.median(xask) <= 1.0)

        # 3 + 4: one process, chat-like.
        warm = part("warm", str(index), str(runs))
        table.add("3 warm chat, same question: first token", warm["first"], "s", "<=0.4 s", warm["floor_first"],
                  lambda a, b: a / b, met=statistics.median(warm["first"]) <= 0.4)
        table.add("3 warm chat, same question: total", warm["total"], "s", "<=1.0 s", warm["floor_total"],
                  lambda a, b: a / b, met=statistics.median(warm["total"]) <= 1.0)
        table.add("3 warm chat, other question: first token", warm["other_first"], "s", "(info)")
        if warm["decode_tps"]:
            table.add("4 generation speed", warm["decode_tps"], "tok/s", "ratio>=0.85", warm["floor_tps"],
                      lambda a, b: a / b,
                      met=statistics.median(warm["decode_tps"]) / statistics.median(warm["floor_tps"]) >= 0.85)

        # 5: indexing speed vs raw encode; no-op re-index of 1,000 articles.
        articles = work / "articles"
        write_articles(articles, 40 if args.quick else 100, 14, seed=5)
        speed = part("index-speed", str(articles), str(index), str(work), str(max(2, runs - 2)))
        n = speed["chunks"]
        # Goal (issue 15): the whole run >= 3x a bare encode of the same chunks; ratio of medians, and
        # runs alternate with the floor so that both see the same load.
        table.add(f"5 indexing {n} chunks", [n / s for s in speed["rag_s"]], "chunks/s", "ratio>=3.0",
                  [n / s for s in speed["raw_s"]], lambda a, b: a / b,
                  met=statistics.median(speed["raw_s"]) / statistics.median(speed["rag_s"]) >= 3.0,
                  note=f"{speed['precision']} vectors; per-run ratios "
                       + " ".join(f"{r / o:.2f}" for r, o in zip(speed["raw_s"], speed["rag_s"], strict=True)))
        extra["index_speed"] = speed
        many, many_index = work / "many", work / "many-index"
        write_articles(many, 1000, 3, seed=6)
        link_export(index, many_index)
        subprocess.run([*RAG, "index", str(many), "--index", str(many_index)], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        (work / "nfloor.py").write_text(NOOP_FLOOR)
        noop, nfloor = [], []
        for _ in range(runs):
            noop.append(run_process([*RAG, "index", str(many), "--index", str(many_index)], env=env)[0])
            nfloor.append(run_process([PY, str(work / "nfloor.py"), str(many)], env=env)[0])
        table.add("5 no-op re-index, 1,000 articles", noop, "s", "<=1.0 s", nfloor, lambda a, b: a / b,
                  met=statistics.median(noop) <= 1.0)

        # 6: retrieval at 10k and 100k synthetic chunks.
        for size in sizes:
            syn = work / f"syn-{size}"
            built = part("build-synthetic", str(syn), str(size))
            extra[f"synthetic_{size}"] = built
            searches = [part("search", str(syn), "60") for _ in range(2 if size > 10_000 else 3)]
            p50 = [s["p50_ms"] for s in searches]
            goal = "p50<=20 ms" if size == 100_000 else "(info)"
            table.add(f"6 retrieval p50, {size // 1000}k chunks", p50, "ms", goal,
                      met=statistics.median(p50) <= 20 if size == 100_000 else None)
            table.add(f"6 retrieval p95, {size // 1000}k chunks", [s["p95_ms"] for s in searches], "ms", "(info)")
            table.add(f"6 open + first search, {size // 1000}k chunks", [s["open_and_first_s"] for s in searches],
                      "s", "(info)", note=f"publish (BM25 build, FAISS write) took {built['publish_s']:.1f} s")
            table.add(f"6 memory, {size // 1000}k chunks", [s["memory_mb"] * 100_000 / size for s in searches],
                      "MB/100k", "(info)")
            shutil.rmtree(syn)

        # 6 (approximate): 1M synthetic chunks shaped like the real ones, real questions; rag.vector_index.
        ann_rows(table, extra, index, work, 200_000 if args.quick else 1_000_000)

        table.add("7 peak RSS, cold rag ask (llm)", rss, "MB", "(info)")

        # 9: rag serve under 16 concurrent clients; `rag ask --server` (warm server) vs a cold `rag ask`.
        for mode in ("extractive", "llm"):
            proc, url = start_server(str(index), mode, env)
            try:
                load = serve_load(url, mode, 16, gold_questions(80))
                extra[f"serve_{mode}"] = load
                table.add(f"9 rag serve {mode}, 16 clients: p50", [load["p50_s"]], "s",
                          "<=4x alone" if mode == "extractive" else "(info)", [load["alone_p50_s"]],
                          lambda a, b: a / b, met=load["p50_s"] <= 4 * load["alone_p50_s"] and not load["errors"]
                          if mode == "extractive" else None,
                          note=f"p95 {load['p95_s']:.2f} s, {load['rps']:.1f} req/s, {load['errors']} errors")
                if mode == "llm":
                    remote = [run_process([*RAG, "ask", QUESTION, "--server", url, "--json"], env=env)[0]
                              for _ in range(runs)]
                    table.add("9 rag ask --server (warm) vs cold rag ask", remote, "s", "ratio<=0.25", ask,
                              lambda a, b: a / b, met=statistics.median(remote) / statistics.median(ask) <= 0.25)
            finally:
                proc.terminate()
                proc.wait(30)

        # 10: the Milvus store (Milvus Lite on loopback) vs the file store, the same chunks and queries.
        milvus = part("milvus-search", str(work), "5000", "60")
        extra["milvus_store"] = milvus
        table.add("10 Milvus-store retrieval p50, 5k chunks", milvus["milvus_p50_ms"], "ms", "(info)",
                  milvus["files_p50_ms"], lambda a, b: a / b,
                  note=f"floor = the FAISS store; build {milvus['build_s']['milvus']:.1f} s vs "
                       f"{milvus['build_s']['files']:.1f} s")

        # 11: 100k generated articles: peak RSS of the first `rag index`, then no-op re-indexes (issue 15 goal 3).
        from bench_scale import write_many

        count = 10_000 if args.quick else 100_000
        scale, scale_index = work / "scale", work / "scale-index"
        write_many(scale, count, 11, sentences, corpus_words())
        first = part("scale-index", str(scale), str(scale_index))
        assert first["added"] == count, first
        extra["scale_first_index"] = first
        table.add(f"11 peak RSS, indexing {count // 1000}k articles", [first["peak_rss_mb"]], "MB", "<=1500 MB",
                  met=first["peak_rss_mb"] <= 1500,
                  note=f"{first['chunks']} chunks in {first['seconds']:.0f} s; hash vectors, no model")
        noops = []
        for _ in range(3):
            wall, _, code, out = run_process([PY, __file__, "--part", "scale-index", str(scale), str(scale_index)],
                                             cwd=ROOT)
            assert code == 0 and json.loads(out.strip().splitlines()[-1])["unchanged"] == count
            noops.append(wall)
        table.add(f"11 no-op re-index, {count // 1000}k articles", noops, "s", "<=5 s",
                  met=statistics.median(noops) <= 5, note="whole process, imports included")
        shutil.rmtree(scale_index)

        # 8: saved web pages extracted per second (rag's reader vs a bare trafilatura.extract).
        pages = work / "pages"
        write_pages(pages, 1000, seed=8)
        html = [part("html-speed", str(pages)) for _ in range(max(2, runs - 2))]
        table.add("8 HTML pages extracted, 1,000 pages", [h["pages"] / h["rag_s"] for h in html], "pages/s",
                  "ratio>=0.8", [h["pages"] / h["bare_s"] for h in html], lambda a, b: a / b,
                  met=statistics.median([h["bare_s"] / h["rag_s"] for h in html]) >= 0.8)

        # Thread count and quantisation type: the evidence for rag.llm's defaults.
        extra["threads"] = part("threads", capture["model"])
        from rag.llm import default_model_path  # the shipped Q4_1 file, not the Q8_0 copy rag loads

        extra["quants"] = part("quants", str(default_model_path() or capture["model"]), str(work))
        print("\ndecode / prefill tokens/s by threads (median of 2), idle and beside one busy process:")
        for key, v in extra["threads"].items():
            if not isinstance(v, dict):
                continue
            print(f"  {key:<18} decode {statistics.median(v['decode_tps']):6.1f}   "
                  f"prefill {statistics.median(v['prefill_tps']):6.0f}")
        print(f"quantisation types, {info['threads_used']} thread(s) (requantised locally from the shipped Q4_1):")
        for name, v in extra["quants"].items():
            if not isinstance(v, dict):
                continue
            print(f"  {name:<16} {v['size_mb']:6.0f} MB   decode {v['decode_tps']:6.1f}   "
                  f"prefill {v['prefill_tps']:6.0f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = os.getloadavg()
    info["bench_seconds"] = round(time.perf_counter() - bench_started, 1)
    REPORT.write_text(json.dumps({"machine": info, "rows": table.rows, "extra": extra}, indent=2) + "\n")
    print(f"\n{info['bench_seconds']:.0f} s; load average {info['load_average_end'][0]:.2f}; wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
