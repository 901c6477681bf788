"""Print the evidence features behind the abstain decision for every gold question.

Usage: .venv/bin/python eval/calibrate.py [INDEX] > features.tsv
Used to set the thresholds in rag/evidence.py: the aim is zero false abstentions on answerable
questions first, then as many abstentions on unanswerable ones as that allows.
"""

from __future__ import annotations

import sys

from rag import evidence
from rag.citations import content_tokens
from rag.config import Settings
from rag.evaluate import load_gold
from rag.pipeline import EVIDENCE_SENTENCES, Pipeline


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        return
    index = sys.argv[1] if len(sys.argv) > 1 else "eval/.index"
    pipeline = Pipeline(Settings(index=index, mode="extractive"))
    print("id\tanswerable\tbest\tkey_cov\tq_cov_best\tasks_for\tgiven\tmissing\tquestion")
    for item in load_gold("eval/gold.jsonl"):
        q = item["question"]
        hits = pipeline.retriever.search(q, pipeline.settings.k)
        chosen = evidence.select(q, hits, pipeline.embedder.embed, EVIDENCE_SENTENCES)
        best = max((e.score for e in chosen), default=0.0)
        terms = evidence.key_terms(q)
        present = set().union(*(content_tokens(f"{h.text} {h.title} {evidence.date_words(h.date)}")
                                for h in hits)) if hits else set()
        key_cov = len(terms & present) / len(terms) if terms else 1.0
        asked = content_tokens(q)
        top = chosen[0] if chosen else None
        q_cov = len(asked & evidence.evidence_tokens(top)) / len(asked) if top and asked else 0.0
        kind = evidence.answer_type(q)
        asks_for = evidence.KIND_NAMES[kind] if kind else "-"
        given = "-" if kind is None else max(
            (f"{e.score:.3f}" for e in chosen if evidence.holds_new(kind, e.text, q)), default="none")
        print(f"{item['id']}\t{item['answerable']}\t{best:.3f}\t{key_cov:.2f}\t{q_cov:.2f}\t{asks_for}\t{given}\t"
              f"{','.join(sorted(terms - present))}\t{q}")


if __name__ == "__main__":
    main()
