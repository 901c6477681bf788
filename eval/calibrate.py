"""Fit the abstain decision (rag/policy.py) on a calibration split, and print it.

Usage:
    .venv/bin/python eval/calibrate.py GOLD.jsonl INDEX [--max-false-abstain 0.03] [--tsv FILE]
    .venv/bin/python eval/calibrate.py GOLD.jsonl INDEX --selection
    .venv/bin/python eval/calibrate.py GOLD.jsonl INDEX --shapes

`--selection` instead scores a grid of the evidence-selection settings that decide which
sentences an extractive answer quotes (CONTEXT_WEIGHT x PER_ARTICLE x EVIDENCE_SENTENCES x GROUP_SHARE x
EXTRACTIVE_MAX),
with the rag eval metrics, and prints the pick: the highest sum of accuracy, citation precision and
abstain recall. A pick that moves CONTEXT_WEIGHT, PER_ARTICLE or EVIDENCE_SENTENCES moves the abstain features too
(policy.FEATURE_SETTINGS): refit the decision after pasting it.

`--shapes` scores, on the questions the abstain decision answers, the extractive answer beside
simpler answers from the same evidence (`answer_shapes`): the best sentence alone, every evidence
sentence of its article, every evidence sentence. They bound what choosing sentences can reach:
an answer from the best sentence's article cites about as well as the best sentence alone (their
citations share its article), and none from the evidence holds the answer more often than all of it.

Run it on the calibration split only (RealTimeQA weeks of 2023: eval/data/realtimeqa/calib, made
by eval/realtimeqa.py), never on a test split or the committed gold sets. It computes the
evidence features of every question (rag.evidence.features, no model needed), fits a logistic
regression of "answerable" on them (numpy, L2-regularised), then picks the lowest-recall cut-off
that keeps false abstentions on answerable calibration questions at or under the given rate, and
prints the block to paste between the "fitted by eval/calibrate.py" markers in rag/policy.py,
with the calibration figures it reaches.
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np

from rag import evidence, policy
from rag.config import Settings
from rag.evaluate import load_gold, score_answer, summarise
from rag.filters import news_window
from rag.pipeline import Pipeline, as_read, compose, extractive
from rag.types import Sentence

CONTEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
PER_ARTICLES = (2, 3, 4, 6)
GROUP_SHARES = (0.8, 0.82, 0.85, 0.86, 0.87, 0.88, 0.9)
EVIDENCE_COUNTS = (6, 8, 10, 12)
EXTRACTIVE_MAXES = (3, 4, 5, 6, 7, 8)
SETTINGS = ("CONTEXT_WEIGHT", "PER_ARTICLE", "EVIDENCE_SENTENCES", "GROUP_SHARE", "EXTRACTIVE_MAX")


def evidence_for(pipeline: Pipeline, item: dict) -> tuple[list, list]:
    """A gold question's retrieved chunks and evidence sentences, as `rag ask` finds them on its day."""
    q = item["question"]
    hits, apart = pipeline.search(q, pipeline.settings.k, as_of=item.get("date"))
    return hits, evidence.select(q, hits, pipeline.embedder.embed, window=news_window(q, item.get("date")), apart=apart)


def feature_rows(gold: list[dict], index: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One row of features per question, the answerable labels, and the raw values for the TSV."""
    pipeline = Pipeline(Settings(index=index, mode="extractive"))
    rows, labels, raw = [], [], []
    try:
        for item in gold:
            q = item["question"]
            hits, chosen = evidence_for(pipeline, item)
            values, missing = evidence.features(q, chosen, hits)
            rows.append([values[name] for name in policy.FEATURES])
            labels.append(1.0 if item["answerable"] else 0.0)
            raw.append({"id": item["id"], "answerable": item["answerable"], **values,
                        "missing": ",".join(missing), "question": q})
    finally:
        pipeline.close()
    return np.asarray(rows, dtype=np.float64), np.asarray(labels), raw


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.01, steps: int = 20000,
                 rate: float = 0.5) -> tuple[np.ndarray, float]:
    """Weights and bias by gradient descent on the mean log-loss, classes weighted equally."""
    w, b = np.zeros(x.shape[1]), 0.0
    share = y.mean()
    sample_weight = np.where(y == 1, 0.5 / share, 0.5 / (1 - share))
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = (p - y) * sample_weight
        w -= rate * (x.T @ g / len(y) + l2 * w)
        b -= rate * g.mean()
    return w, float(b)


def pick_cutoff(scores: np.ndarray, y: np.ndarray, max_false_abstain: float) -> float:
    """The highest cut-off whose false-abstain rate on answerable questions stays within bounds."""
    answerable = np.sort(scores[y == 1])
    allowed = math.floor(max_false_abstain * len(answerable))  # this many may fall below the cut-off
    return float(answerable[allowed]) if allowed < len(answerable) else float(answerable[-1])


def report(scores: np.ndarray, y: np.ndarray, cutoff: float) -> str:
    answered = scores >= cutoff
    false_abstain = float(np.mean(~answered[y == 1])) if (y == 1).any() else 0.0
    recall = float(np.mean(~answered[y == 0])) if (y == 0).any() else 0.0
    return f"false-abstain {false_abstain:.1%}, abstain recall {recall:.1%} ({int((y == 0).sum())} unanswerable)"


def memoised(embed):
    """The embedder, remembering each text's vector: the grid embeds the same sentences many times."""
    cache: dict[str, np.ndarray] = {}

    def embed_cached(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, embed(new), strict=True))
        return np.stack([cache[t] for t in texts])

    return embed_cached


def as_answer(chosen: list, sentences: list, abstained: bool, hits: list) -> dict:
    """The fields of a `rag ask --json` answer that rag.evaluate scores, built as `rag ask` builds them."""
    sentences, used = as_read(sentences, chosen)
    return {"abstained": abstained, "answer": compose(sentences),
            "sentences": [{"text": s.text, "citations": s.citations} for s in sentences],
            "citations": [{"n": e.n, "doc_id": e.doc_id, "quote": e.text, "also_reported_by": e.also_reported_by}
                          for e in used],
            "retrieved": [{"doc_id": h.doc_id} for h in hits]}


def selection_grid(gold: list[dict], index: str) -> list[tuple[tuple, dict]]:
    """((CONTEXT_WEIGHT, PER_ARTICLE, EVIDENCE_SENTENCES, GROUP_SHARE, EXTRACTIVE_MAX), eval metrics of
    extractive answers) for every grid point."""
    pipeline = Pipeline(Settings(index=index, mode="extractive"))
    saved = tuple(getattr(policy, name) for name in SETTINGS)
    embed = memoised(pipeline.embedder.embed)
    results = []
    try:
        searched = [(item, *pipeline.search(item["question"], pipeline.settings.k, as_of=item.get("date")))
                    for item in gold]
        for weight, per_article, kept in itertools.product(CONTEXT_WEIGHTS, PER_ARTICLES, EVIDENCE_COUNTS):
            policy.CONTEXT_WEIGHT, policy.PER_ARTICLE, policy.EVIDENCE_SENTENCES = weight, per_article, kept
            judged = []
            for item, hits, apart in searched:
                q = item["question"]
                chosen = evidence.select(q, hits, embed, limit=kept, window=news_window(q, item.get("date")),
                                         apart=apart)
                judged.append((item, hits, chosen, evidence.assess(q, chosen, hits).answerable))
            for share, most in itertools.product(GROUP_SHARES, EXTRACTIVE_MAXES):
                policy.GROUP_SHARE, policy.EXTRACTIVE_MAX = share, most
                rows = [score_answer(item, as_answer(chosen, extractive(item["question"], chosen) if ok else [],
                                                     not ok, hits))
                        for item, hits, chosen, ok in judged]
                results.append(((weight, per_article, kept, share, most), summarise(rows, {})["metrics"]))
    finally:
        for name, value in zip(SETTINGS, saved, strict=True):
            setattr(policy, name, value)
        pipeline.close()
    return results


def answer_shapes(question: str, items: list) -> dict[str, list[Sentence]]:
    """The extractive answer, and the simpler answers from the same evidence that bound it."""
    if not items:
        return dict.fromkeys(SHAPES, [])
    best = max(items, key=lambda e: e.score)

    def quoting(keep) -> list[Sentence]:
        return [Sentence(e.text, [e.n], True) for e in sorted(items, key=lambda e: e.n) if keep(e)]

    return {
        "best sentence": quoting(lambda e: e is best),
        "best sentence's article": quoting(lambda e: e.doc_id == best.doc_id),
        "every evidence sentence": quoting(lambda e: True),
        "extractive answer": extractive(question, items),
    }


SHAPES = ("best sentence", "best sentence's article", "every evidence sentence", "extractive answer")


def shapes_report(gold: list[dict], index: str) -> list[tuple[str, dict]]:
    """(shape, eval metrics) over the questions the abstain decision answers, as `rag eval` scores them."""
    pipeline = Pipeline(Settings(index=index, mode="extractive"))
    rows: dict[str, list[dict]] = {shape: [] for shape in SHAPES}
    try:
        for item in gold:
            q = item["question"]
            hits, chosen = evidence_for(pipeline, item)
            if not evidence.assess(q, chosen, hits).answerable:
                continue
            for shape, sentences in answer_shapes(q, chosen).items():
                rows[shape].append(score_answer(item, as_answer(chosen, sentences, not sentences, hits)))
    finally:
        pipeline.close()
    return [(shape, summarise(rows[shape], {})["metrics"]) for shape in SHAPES]


def print_shapes(results: list[tuple[str, dict]]) -> None:
    print(f"{'answer':34}  accuracy  citation_precision  (answerable questions the decision answers)")
    for shape, m in results:
        print(f"{shape:34}  {m['accuracy'] or 0:8.1%}  {m['citation_precision'] or 0:18.1%}")


def print_selection(results: list[tuple[tuple, dict]]) -> None:
    """The grid, and the pick: the most accuracy + citation precision + abstain recall."""
    def total(m: dict) -> float:
        return sum(m[name] or 0.0 for name in ("accuracy", "citation_precision", "abstain_recall"))

    print("  ".join(SETTINGS) + "  accuracy  citation_precision  abstain_recall  false_abstain")
    for point, m in results:
        print("  ".join(f"{v:>{len(name)}}" for name, v in zip(SETTINGS, point, strict=True)) +
              f"  {m['accuracy']:8.1%}  {m['citation_precision']:18.1%}  "
              f"{m['abstain_recall'] or 0:14.1%}  {m['false_abstain_rate'] or 0:13.1%}")
    point, m = max(results, key=lambda r: total(r[1]))
    print("\n".join(f"{name} = {v}" for name, v in zip(SETTINGS, point, strict=True)) +
          f"  # accuracy {m['accuracy']:.1%}, citation precision {m['citation_precision']:.1%}, "
          f"abstain recall {m['abstain_recall'] or 0:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("gold")
    parser.add_argument("index")
    parser.add_argument("--max-false-abstain", type=float, default=0.03)
    parser.add_argument("--tsv", help="also write every question's features here")
    parser.add_argument("--selection", action="store_true",
                        help="grid the evidence-selection settings instead of fitting the abstain decision")
    parser.add_argument("--shapes", action="store_true",
                        help="score the extractive answer beside simpler answers from the same evidence")
    args = parser.parse_args()
    if args.shapes:
        print_shapes(shapes_report(load_gold(args.gold), args.index))
        return
    if args.selection:
        print_selection(selection_grid(load_gold(args.gold), args.index))
        return
    x, y, raw = feature_rows(load_gold(args.gold), args.index)
    if args.tsv:
        keys = list(raw[0])
        with open(args.tsv, "w", encoding="utf-8") as f:
            f.write("\t".join(keys) + "\n")
            for r in raw:
                f.write("\t".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n")
    w, b = fit_logistic(x, y)
    scores = 1 / (1 + np.exp(-(x @ w + b)))
    cutoff = pick_cutoff(scores, y, args.max_false_abstain)
    print(fitted_block(w, b, cutoff, [f"calibration: {args.gold}, {len(y)} questions:", report(scores, y, cutoff)]))


def fitted_block(w: np.ndarray, bias: float, cutoff: float, notes: list[str]) -> str:
    """The block between the "fitted by eval/calibrate.py" markers of rag/policy.py: the fit, and the
    settings its features were read at (FITTED_AT; a test holds them equal to the current ones)."""
    weights = ", ".join(f'"{name}": {value:.3f}' for name, value in zip(policy.FEATURES, w, strict=True))
    settings = [f'"{name}": {value!r}' for name, value in policy.feature_settings().items()]
    rows = [", ".join(settings[i:i + 4]) + "," for i in range(0, len(settings), 4)]
    return "\n".join([
        "# fitted by eval/calibrate.py (begin)",
        *(f"# {note}" for note in notes),
        f"WEIGHTS = {{{weights}}}",
        f"BIAS = {bias:.3f}",
        f"ANSWER_AT = {cutoff:.3f}  # answer when the score is at least this",
        "FITTED_AT = {", *(f"    {row}" for row in rows), "}",
        "# fitted by eval/calibrate.py (end)",
    ])


if __name__ == "__main__":
    main()
