"""`make bench`: how fast rag is, each figure next to a floor measured in the same run.

Every figure is the median of several runs (min and max beside it), because these machines are
shared and noisy. A floor is the same work done the shortest way we know: a bare script that only
loads the GGUF and generates the same tokens, raw SentenceTransformer.encode of the same chunk
texts, and so on. The ratio says how much rag adds. Results: a table on stdout and
bench/report.json. Heavy parts run in subprocesses (`bench.py --part NAME`) so that each starts
cold and its peak memory is its own. Takes about 5-8 minutes on 2 cores.

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
    """rag's indexing vs raw SentenceTransformer.encode of the same chunk texts (imports excluded from both)."""
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
        shutil.rmtree(index)
    return {"chunks": len(texts), "raw_s": raw, "rag_s": ours}


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


PARTS = {"html-speed": part_html_speed, "capture": part_capture, "warm": part_warm, "index-speed": part_index_speed,
         "build-synthetic": part_build_synthetic, "search": part_search, "threads": part_threads,
         "quants": part_quants}


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
        table.add(f"5 indexing {n} chunks", [n / s for s in speed["rag_s"]], "chunks/s", "ratio>=0.9",
                  [n / s for s in speed["raw_s"]], lambda a, b: a / b,
                  met=statistics.median(speed["raw_s"]) / statistics.median(speed["rag_s"]) >= 0.9)
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
