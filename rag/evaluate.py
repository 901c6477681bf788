"""Gold-set runner and metrics: small pure functions over answer dicts, plus one runner.

Everything here works on the JSON answer dict (`rag ask --json`, see README), so the
metrics can be recomputed from saved reports without a model or an index. Nothing heavy
is imported: the caller passes in `ask`, which owns the model and the index.

Metric definitions (answerable questions only, unless said otherwise):

- correct: every `must` alias group has at least one alias in the answer text, compared
  after `normalise()` and matched on word boundaries ("40" does not match "400").
  An abstained answer is never correct on an answerable question.
- f1: SQuAD-style token F1 between the answer and a reference made of the first alias of
  each group, joined by spaces (lower-cased, punctuation and a/an/the dropped).
- citation precision (ALCE-style): of the citations attached to answer sentences, the
  share that (a) point to a gold source article, or to an article whose near-duplicate
  ("also_reported_by") is a gold source, and (b) have a quote that supports the sentence
  they are attached to. A citation number with no matching citation counts as a miss.
- citation recall: of the answer sentences, the share with at least one attached
  citation whose quote supports the sentence (the source article is not checked here).
- "supports" is a function passed in; the default `lexical_support` is a cheap stand-in
  for an NLI model: at least half of the sentence's content words (stopwords and [n]
  markers removed) occur in the quote, and every number in the sentence occurs in it.
  Citation metrics are left out (None) for answers without sentences, e.g. abstentions.
- recall@k: share of the gold source articles found among the first k retrieved chunks
  (a retrieved chunk also counts for its "also_reported_by" articles when it lists them);
  hit@k: 1 when any gold source is in the first k; MRR: mean of 1/rank of the first
  retrieved chunk from a gold source (0 when none).
- abstention (all questions): precision = abstained-and-unanswerable / abstained;
  recall = abstained-and-unanswerable / unanswerable; false-abstain rate =
  abstained-and-answerable / answerable.
- latency: p50/p95 of timings_ms "retrieve", "first_token", "total" where present, and of
  the wall-clock time the runner measured around `ask`; tokens/s when the answer carries it.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rag.errors import RagError, UsageError

KINDS = ("fact", "multi", "crisis", "paraphrase", "unanswerable")
LATENCY_KEYS = ("retrieve", "first_token", "total")
TOKENS_PER_S_KEYS = ("tokens_per_s", "tok_per_s", "tokens_per_second")
DEFAULT_KS = (1, 3, 5)

# Metrics where a bigger number is worse; everything else is better when higher.
LOWER_IS_BETTER = ("latency_", "false_abstain_rate")

_PUNCT_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u00a0": " ",
})

STOPWORDS = frozenset("""
a an the and or but if of at by for with about against between into through during before after
above below to from up down in out on off over under again further then once here there when where
why how all any both each few more most other some such no nor not only own same so than too very
can will just should now is are was were be been being have has had having do does did doing would
could may might must shall this that these those it its it's he him his she her they them their we
us our you your i me my who whom which what as also said says say told according
""".split())

_CITATION_MARK = re.compile(r"\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


# ---------------------------------------------------------------- gold set

def load_gold(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL gold set; every problem is a UsageError naming file:line, so a typo never
    silently drops or mis-scores a question."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"cannot read gold set {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"gold set {path} is not UTF-8 text") from None
    gold: list[dict] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e.msg})") from None
        _check_gold_item(item, where)
        if item["id"] in seen:
            raise UsageError(f"{where}: duplicate id {item['id']!r}")
        seen.add(item["id"])
        gold.append(item)
    if not gold:
        raise UsageError(f"gold set {path} holds no questions")
    return gold


def _check_gold_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: each line must be a JSON object")
    missing = [k for k in ("id", "question", "must", "sources", "answerable") if k not in item]
    if missing:
        raise UsageError(f"{where}: missing field(s) {', '.join(missing)}")
    for key in ("id", "question"):
        if not isinstance(item[key], str) or not item[key].strip():
            raise UsageError(f"{where}: {key!r} must be a non-empty string")
    if not isinstance(item["answerable"], bool):
        raise UsageError(f"{where}: 'answerable' must be true or false")
    must = item["must"]
    if not (isinstance(must, list) and all(
            isinstance(g, list) and g and all(isinstance(a, str) and a.strip() for a in g) for g in must)):
        raise UsageError(f"{where}: 'must' must be a list of non-empty lists of non-empty strings")
    sources = item["sources"]
    if not (isinstance(sources, list) and all(isinstance(s, str) and s for s in sources)):
        raise UsageError(f"{where}: 'sources' must be a list of doc ids")
    if item["answerable"] and (not must or not sources):
        raise UsageError(f"{where}: an answerable question needs 'must' aliases and 'sources'")
    if not item["answerable"] and (must or sources):
        raise UsageError(f"{where}: an unanswerable question must have empty 'must' and 'sources'")
    if "kind" in item and item["kind"] not in KINDS:
        raise UsageError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")


# ---------------------------------------------------------------- answer text

def normalise(text: str | None) -> str:
    """Lower-case, straighten curly quotes and dashes, collapse whitespace: the form both
    answers and aliases are compared in."""
    text = unicodedata.normalize("NFKC", text or "").translate(_PUNCT_MAP)
    return " ".join(text.lower().split())


def contains_alias(text: str, alias: str) -> bool:
    """True when `alias` occurs in `text` (both normalised), not inside a longer word or number."""
    alias = normalise(alias)
    if not alias:
        return False
    left = r"(?<![a-z0-9])" if alias[0].isalnum() else ""
    right = r"(?![a-z0-9])" if alias[-1].isalnum() else ""
    return re.search(left + re.escape(alias) + right, normalise(text)) is not None


def is_correct(answer_text: str, must: list[list[str]]) -> bool:
    """Every alias group has at least one alias in the answer."""
    return all(any(contains_alias(answer_text, a) for a in group) for group in must)


def _f1_tokens(text: str) -> list[str]:
    text = "".join(" " if ch in string.punctuation else ch for ch in normalise(text))
    return [t for t in text.split() if t not in ("a", "an", "the")]


def token_f1(answer_text: str, reference: str) -> float:
    """SQuAD-style token F1; a soft score next to the strict alias check."""
    pred, ref = _f1_tokens(answer_text), _f1_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def reference_text(must: list[list[str]]) -> str:
    return " ".join(group[0] for group in must)


# ---------------------------------------------------------------- citations

def _stem(word: str) -> str:
    """Crude plural/possessive folding so 'attacks' meets 'attack'; deliberately no real stemmer."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    text = _CITATION_MARK.sub(" ", normalise(text))
    return {_stem(w) for w in _WORD.findall(text) if w not in STOPWORDS}


def lexical_support(sentence: str, quote: str, threshold: float = 0.5) -> bool:
    """Cheap support check: >= threshold of the sentence's content words are in the quote and
    every number in the sentence is too (a wrong number is the commonest unsupported claim)."""
    words = content_words(sentence)
    if not words or not quote:
        return False
    quote_words = content_words(quote)
    numbers = set(_NUMBER.findall(_CITATION_MARK.sub(" ", normalise(sentence))))
    quote_numbers = set(_NUMBER.findall(normalise(quote)))
    if not numbers <= quote_numbers:
        return False
    return len(words & quote_words) / len(words) >= threshold


Supports = Callable[[str, str], bool]


def _is_gold_source(citation: dict, sources: Iterable[str]) -> bool:
    docs = {citation.get("doc_id"), *(citation.get("also_reported_by") or [])}
    return bool(docs & set(sources))


def citation_scores(answer: dict, sources: list[str],
                    supports: Supports = lexical_support) -> tuple[float | None, float | None]:
    """(precision, recall) for one answer, as defined in the module docstring; None when the
    answer has no sentences (precision also None when no sentence cites anything)."""
    sentences = answer.get("sentences") or []
    if not sentences:
        return None, None
    by_n = {c.get("n"): c for c in answer.get("citations") or []}
    n_cited = n_good = n_supported_sentences = 0
    for sentence in sentences:
        text = sentence.get("text", "")
        sentence_supported = False
        for n in sentence.get("citations") or []:
            n_cited += 1
            citation = by_n.get(n)
            if citation is None:
                continue
            ok = supports(text, citation.get("quote") or "")
            sentence_supported = sentence_supported or ok
            if ok and _is_gold_source(citation, sources):
                n_good += 1
        n_supported_sentences += sentence_supported
    precision = n_good / n_cited if n_cited else None
    return precision, n_supported_sentences / len(sentences)


# ---------------------------------------------------------------- retrieval

def retrieval_scores(retrieved: list[dict], sources: list[str],
                     ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """recall@k, hit@k and reciprocal rank of the first gold-source chunk for one question."""
    gold = set(sources)
    ordered = sorted(retrieved or [], key=lambda r: r.get("rank", 0))
    docs_per_rank = [{r.get("doc_id"), *(r.get("also_reported_by") or [])} for r in ordered]
    scores: dict[str, float] = {}
    for k in ks:
        found = set().union(*docs_per_rank[:k]) & gold if docs_per_rank else set()
        scores[f"recall@{k}"] = len(found) / len(gold) if gold else 0.0
        scores[f"hit@{k}"] = float(bool(found))
    first = next((i for i, docs in enumerate(docs_per_rank, 1) if docs & gold), None)
    scores["rr"] = 1.0 / first if first else 0.0
    return scores


# ---------------------------------------------------------------- abstention and timing

def abstention_scores(rows: list[dict]) -> dict[str, float | None]:
    """Rows need "answerable" and "abstained"; None where a denominator is zero."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    abstained = [r for r in rows if r["abstained"]]
    true_abstain = sum(1 for r in unanswerable if r["abstained"])
    false_abstain = sum(1 for r in answerable if r["abstained"])
    return {
        "abstain_precision": true_abstain / len(abstained) if abstained else None,
        "abstain_recall": true_abstain / len(unanswerable) if unanswerable else None,
        "false_abstain_rate": false_abstain / len(answerable) if answerable else None,
    }


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in 0..100; None for no values."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def tokens_per_s(answer: dict) -> float | None:
    timings = answer.get("timings_ms") or {}
    for key in TOKENS_PER_S_KEYS:
        value = timings.get(key, answer.get(key))
        if isinstance(value, int | float):
            return float(value)
    return None


def timing_scores(rows: list[dict]) -> dict[str, float]:
    """p50/p95 per timing key; keys absent from every answer are left out, not reported as 0."""
    scores: dict[str, float] = {}
    for key in (*LATENCY_KEYS, "wall"):
        values = [r["timings_ms"][key] for r in rows
                  if isinstance((r.get("timings_ms") or {}).get(key), int | float)]
        if values:
            scores[f"latency_{key}_p50_ms"] = percentile(values, 50)
            scores[f"latency_{key}_p95_ms"] = percentile(values, 95)
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") is not None]
    if rates:
        scores["tokens_per_s_p50"] = percentile(rates, 50)
    return scores


# ---------------------------------------------------------------- runner

def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def score_answer(item: dict, answer: dict, supports: Supports = lexical_support,
                 ks: Iterable[int] = DEFAULT_KS) -> dict:
    """One per-question row: the answer as given plus every verdict on it."""
    abstained = bool(answer.get("abstained"))
    text = answer.get("answer") or ""
    row = {
        "id": item["id"],
        "kind": item.get("kind"),
        "question": item["question"],
        "answerable": item["answerable"],
        "answer": text,
        "abstained": abstained,
        "citations": answer.get("citations") or [],
        "retrieved_doc_ids": [r.get("doc_id") for r in answer.get("retrieved") or []],
        "timings_ms": dict(answer.get("timings_ms") or {}),
        "tokens_per_s": tokens_per_s(answer),
        "error": answer.get("error"),
        "notes": list(answer.get("notes") or []),  # why it abstained, what verification dropped
        "draft": answer.get("draft"),  # the model's own text before verification (llm mode)
    }
    if item["answerable"]:
        row["correct"] = (not abstained) and is_correct(text, item["must"])
        row["f1"] = 0.0 if abstained else token_f1(text, reference_text(item["must"]))
        row["citation_precision"], row["citation_recall"] = citation_scores(
            answer, item["sources"], supports) if not abstained else (None, None)
        row["retrieval"] = retrieval_scores(answer.get("retrieved") or [], item["sources"], ks)
    else:
        row["correct"] = abstained
        row["f1"] = row["citation_precision"] = row["citation_recall"] = row["retrieval"] = None
    return row


def summarise(rows: list[dict], config: dict, ks: Iterable[int] = DEFAULT_KS) -> dict:
    """The report: metrics (flat name -> number or None), counts, per-kind accuracy, config."""
    answerable = [r for r in rows if r["answerable"]]
    metrics: dict[str, float | None] = {
        "accuracy": _mean(float(r["correct"]) for r in answerable),
        "f1": _mean(r["f1"] for r in answerable),
        "citation_precision": _mean(r["citation_precision"] for r in answerable),
        "citation_recall": _mean(r["citation_recall"] for r in answerable),
    }
    for k in ks:
        metrics[f"recall@{k}"] = _mean(r["retrieval"][f"recall@{k}"] for r in answerable)
        metrics[f"hit@{k}"] = _mean(r["retrieval"][f"hit@{k}"] for r in answerable)
    metrics["mrr"] = _mean(r["retrieval"]["rr"] for r in answerable)
    metrics.update(abstention_scores(rows))
    metrics.update(timing_scores(rows))
    by_kind: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = by_kind.setdefault(r.get("kind") or "unlabelled", {"n": 0, "correct": 0})
        entry["n"] += 1
        entry["correct"] += bool(r["correct"])
    for entry in by_kind.values():
        entry["accuracy"] = entry["correct"] / entry["n"]
    counts = {
        "questions": len(rows),
        "answerable": len(answerable),
        "unanswerable": len(rows) - len(answerable),
        "abstained": sum(r["abstained"] for r in rows),
        "correct": sum(bool(r["correct"]) for r in answerable),
        "citation_scored": sum(r["citation_recall"] is not None for r in answerable),
        "errors": sum(bool(r.get("error")) for r in rows),
    }
    return {"metrics": metrics, "counts": counts, "by_kind": by_kind, "config": dict(config)}


def run_eval(gold: list[dict], ask: Callable[[str, str | None], dict], config: dict,
             supports: Supports = lexical_support,
             ks: Iterable[int] = DEFAULT_KS) -> tuple[list[dict], dict]:
    """Ask every gold question and score it. A RagError on one question (a model hiccup) is
    recorded on that row and the run goes on; a UsageError (no index, bad model) stops it,
    since every other question would fail the same way. `ask` gets the question and the day it
    was asked (the gold line's optional `date`, or None)."""
    ks = tuple(ks)
    rows = []
    for item in gold:
        started = time.perf_counter()
        try:
            answer = ask(item["question"], item.get("date"))
        except UsageError:
            raise
        except RagError as e:
            answer = {"answer": "", "abstained": False, "error": str(e)}
        if hasattr(answer, "__dataclass_fields__"):
            from dataclasses import asdict
            answer = asdict(answer)
        row = score_answer(item, answer, supports, ks)
        row["timings_ms"].setdefault("wall", round((time.perf_counter() - started) * 1000, 1))
        rows.append(row)
    return rows, summarise(rows, config, ks)


# ---------------------------------------------------------------- output

def write_report(out_dir: str | os.PathLike, per_question: list[dict], report: dict) -> tuple[Path, Path]:
    """Write per_question.jsonl and report.json into out_dir (created); each file appears whole."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows_path, report_path = out / "per_question.jsonl", out / "report.json"
    _write_atomic(rows_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_question))
    _write_atomic(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return rows_path, report_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_report(path: str | os.PathLike) -> dict:
    """Read an earlier report.json (a directory holding one is fine too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read report {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"report {path} is not valid JSON ({e.msg})") from None
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise UsageError(f"report {path} has no 'metrics' object")
    return report


def _is_rate(name: str) -> bool:
    return not (name.startswith("latency_") or name.startswith("tokens_per_s"))


def format_value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "mrr":
        return f"{value:.3f}"
    if _is_rate(name):
        return f"{100 * value:.1f}%"
    return f"{value:.1f} ms" if name.endswith("_ms") else f"{value:.1f}"


def format_table(report: dict) -> str:
    """A plain-text summary for the terminal: counts, metrics, then accuracy per kind."""
    counts = report.get("counts", {})
    lines = ["questions {questions}  answerable {answerable}  unanswerable {unanswerable}  "
             "abstained {abstained}  errors {errors}".format(**{k: counts.get(k, 0) for k in (
                 "questions", "answerable", "unanswerable", "abstained", "errors")}), ""]
    metrics = report.get("metrics", {})
    width = max((len(name) for name in metrics), default=10)
    lines += [f"{name:<{width}}  {format_value(name, value):>10}" for name, value in metrics.items()]
    by_kind = report.get("by_kind") or {}
    if by_kind:
        lines += ["", f"{'kind':<{width}}  {'correct':>10}"]
        lines += [f"{kind:<{width}}  {e['correct']:>4}/{e['n']:<3} {100 * e['accuracy']:5.1f}%"
                  for kind, e in sorted(by_kind.items())]
    return "\n".join(lines)


def lower_is_better(name: str) -> bool:
    return name.startswith(LOWER_IS_BETTER)


def compare(report: dict, earlier_report: dict, rate_tolerance: float = 0.005,
            timing_tolerance: float = 0.10) -> str:
    """Metric-by-metric deltas against an earlier run. A rate that got worse by more than
    rate_tolerance (0.5 percentage points) is a REGRESSION; timings and tokens/s are noisy, so
    they count only when worse by more than timing_tolerance (10%) relative."""
    now, before = report.get("metrics", {}), earlier_report.get("metrics", {})
    width = max((len(n) for n in now), default=10)
    lines = [f"{'metric':<{width}}  {'before':>10}  {'now':>10}  {'delta':>10}"]
    for name, value in now.items():
        old = before.get(name)
        if value is None or old is None:
            lines.append(f"{name:<{width}}  {format_value(name, old):>10}  {format_value(name, value):>10}")
            continue
        delta = value - old
        worse = -delta if not lower_is_better(name) else delta
        if _is_rate(name):
            shown, regressed = f"{100 * delta:+.1f} pp", worse > rate_tolerance
        else:
            shown = f"{delta:+.1f}"
            regressed = worse > timing_tolerance * abs(old) if old else worse > 0
        mark = "  REGRESSION" if regressed else ""
        lines.append(f"{name:<{width}}  {format_value(name, old):>10}  {format_value(name, value):>10}"
                     f"  {shown:>10}{mark}")
    return "\n".join(lines)


def check_floors(report: dict, floors: dict[str, float]) -> list[str]:
    """One message per metric under its floor. "max_<metric>" is a ceiling instead (latency,
    false-abstain rate). A floor on a metric the report lacks is a failure, not a pass."""
    metrics = report.get("metrics", {})
    failures = []
    for key, limit in floors.items():
        ceiling = key.startswith("max_")
        name = key[4:] if ceiling else key
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name}: not measured in this run (floor {key} = {limit})")
        elif ceiling and value > limit:
            failures.append(f"{name}: {format_value(name, value)} is above the ceiling "
                            f"{format_value(name, limit)}")
        elif not ceiling and value < limit:
            failures.append(f"{name}: {format_value(name, value)} is under the floor "
                            f"{format_value(name, limit)}")
    return failures


def load_floors(path: str | os.PathLike) -> dict[str, float]:
    """Read a floors file: a JSON object {"metric": min} or {"max_metric": max}."""
    path = Path(path)
    try:
        floors = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read floors file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"floors file {path} is not valid JSON ({e.msg})") from None
    if not isinstance(floors, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in floors.values()):
        raise UsageError(f"floors file {path} must be a JSON object of metric name -> number")
    return floors


# ---------------------------------------------------------------- the `rag eval` command

def eval_config(pipeline, mode: str, k: int, gold_path: str) -> dict:
    """What a report must record to be comparable: model file hash, embedder, k, mode, commit."""
    import hashlib
    import subprocess

    model = None
    if mode == "llm":
        path = Path(pipeline.llm.path)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        model = {"file": path.name, "sha256": digest.hexdigest()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"mode": mode, "k": k, "model": model, "embedder": pipeline.embedder.identity,
            "index": str(pipeline.settings.store or pipeline.settings.index), "gold": gold_path, "git_commit": commit,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_command(args, settings, filters) -> int:
    """`rag eval`: load once, ask every gold question, write the reports, print the table."""
    import sys

    from rag.pipeline import Pipeline

    gold = load_gold(args.gold)
    floors = load_floors(args.floors) if args.floors else None
    earlier = load_report(args.compare) if args.compare else None
    pipeline = Pipeline(settings, model_flag=args.model)
    try:
        config = eval_config(pipeline, settings.mode, settings.k, args.gold)
        rows, report = run_eval(gold, lambda q, day: pipeline.ask(q, filters=filters, as_of=day or args.as_of), config)
    finally:
        pipeline.close()
    out = Path(args.out or Path("eval/reports") / f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.mode}")
    rows_path, report_path = write_report(out, rows, report)
    print(format_table(report))
    print(f"\nreport: {report_path}\nper question: {rows_path}")
    if earlier is not None:
        print("\n" + compare(report, earlier))
    if floors is not None:
        failures = check_floors(report, floors)
        for failure in failures:
            print(f"rag: eval floor: {failure}", file=sys.stderr)
        if failures:
            return 1
    return 0
