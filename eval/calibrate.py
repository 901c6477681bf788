"""Fit the abstain decision (rag/policy.py) on a calibration split, and print it.

Usage:
    .venv/bin/python eval/calibrate.py GOLD.jsonl INDEX [--max-false-abstain 0.03] [--tsv FILE]

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
import math

import numpy as np

from rag import evidence, policy
from rag.config import Settings
from rag.evaluate import load_gold
from rag.filters import recent_window
from rag.pipeline import Pipeline


def feature_rows(gold: list[dict], index: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One row of features per question, the answerable labels, and the raw values for the TSV."""
    pipeline = Pipeline(Settings(index=index, mode="extractive"))
    rows, labels, raw = [], [], []
    try:
        for item in gold:
            q = item["question"]
            hits = pipeline.retriever.search(q, pipeline.settings.k, as_of=item.get("date"))
            window = recent_window(q, item.get("date"))
            chosen = evidence.select(q, hits, pipeline.embedder.embed, window=window)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("gold")
    parser.add_argument("index")
    parser.add_argument("--max-false-abstain", type=float, default=0.03)
    parser.add_argument("--tsv", help="also write every question's features here")
    args = parser.parse_args()
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
    weights = ", ".join(f'"{name}": {value:.3f}' for name, value in zip(policy.FEATURES, w, strict=True))
    print(f"# calibration: {args.gold}, {len(y)} questions:")
    print(f"# {report(scores, y, cutoff)}")
    print("# fitted by eval/calibrate.py (begin)")
    print(f"WEIGHTS = {{{weights}}}")
    print(f"BIAS = {b:.3f}")
    print(f"ANSWER_AT = {cutoff:.3f}  # answer when the score is at least this")
    print("# fitted by eval/calibrate.py (end)")


if __name__ == "__main__":
    main()
