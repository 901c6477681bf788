"""Two-part questions from one RealTimeQA split: "<question 1>, and <question 2>?".

Usage:
    python3 eval/two_part.py eval/data/realtimeqa/calib/gold.jsonl eval/data/realtimeqa/calib/two_part.jsonl

RealTimeQA asks one thing per question, so nothing in it exercises questions that ask two ("Who
won the runoff, and who won the most seats?"). This joins each answerable, one-sentence wh-question
with the next one of the same week: the answer must hold both answers (`must` is both lists of
alias groups) and may cite the sources of either. Both questions' articles are in the split's
corpus, so the joined file runs against the split's own index. The two topics are unrelated, which
makes it harder than the two-part questions people ask about one story: it is a check that each
ask gets its own evidence, not a quiz anyone wrote. Output goes next to the split (git-ignored).

Standard library only; deterministic (input order).
"""

from __future__ import annotations

import json
import re
import sys

_ASKS = re.compile(r"^(Who|Whom|Whose|What|Which|Where|When|How)\b")


def joinable(item: dict) -> bool:
    """An answerable question that is one sentence and opens with a question word."""
    q = item["question"].strip()
    return item["answerable"] and q.endswith("?") and q.count("?") == 1 and ". " not in q and bool(_ASKS.match(q))


def join(first: dict, second: dict) -> dict:
    q2 = second["question"].strip()
    return {
        "id": f"{first['id']}+{second['id'].split('_')[-1]}",
        "question": first["question"].strip().rstrip("?") + ", and " + q2[0].lower() + q2[1:],
        "must": first["must"] + second["must"],
        "sources": sorted(set(first["sources"]) | set(second["sources"])),
        "answerable": True,
        "kind": "multi",
        "date": max(first.get("date") or "", second.get("date") or "") or None,
    }


def two_part(gold: list[dict]) -> list[dict]:
    """Each joinable question with the next joinable one of its week (ids are WEEK_N)."""
    weeks: dict[str, list[dict]] = {}
    for item in gold:
        if joinable(item):
            weeks.setdefault(item["id"].split("_")[0], []).append(item)
    return [join(a, b) for week in sorted(weeks) for a, b in zip(weeks[week], weeks[week][1:], strict=False)]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python3 eval/two_part.py GOLD_IN GOLD_OUT")
    with open(sys.argv[1], encoding="utf-8") as f:
        gold = [json.loads(line) for line in f if line.strip()]
    joined = two_part(gold)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in joined)
    print(f"{sys.argv[2]}: {len(joined)} two-part questions")


if __name__ == "__main__":
    main()
