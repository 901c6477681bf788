"""Convert the public RealTimeQA weekly news quizzes into the project's gold format.

Usage:
    python3 eval/realtimeqa.py [--repo PATH] [--out DIR]

--repo is the RealTimeQA repository (https://github.com/realtimeqa/realtimeqa_public), either a bare
git mirror (read with `git show`) or a normal checkout folder. --out defaults to eval/data/realtimeqa.

Splits: weeks of 2023 -> OUT/calib, weeks of 2024 -> OUT/test. Weeks from 2025 on are held out:
only paths under past/2023/ and past/2024/ are ever listed or read.

Each split gets corpus.jsonl (the articles the web search found for the sampled questions, text
truncated to ~3000 characters), gold.jsonl (questions with the correct choice as the answer; about
20% turned into unanswerable ones by leaving out the articles that hold their answer) and the
folder gets a generated README.md. The data has no license: eval/data/ is git-ignored.

Standard library only; deterministic (seeded random, sorted inputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_REPO = "/work/.mirror/realtimeqa+realtimeqa_public/repo"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "realtimeqa"
UPSTREAM = "https://github.com/realtimeqa/realtimeqa_public"
SPLITS = {"calib": "past/2023/", "test": "past/2024/"}  # 2025+ is held out: never listed nor read
SEED = 13
MAX_CHARS = 3000
ARTICLES_PER_QUESTION = 3
TARGET_ANSWERABLE = 200
TARGET_UNANSWERABLE = 50

YES_NO = {"yes", "no", "true", "false"}
NONE_OF = re.compile(r"\b(none|all|both|neither) of (the|these|them)\b|^(none|neither|both)$", re.I)
IMAGE_REF = re.compile(
    r"\bpictured\b|\b(this|the|these) (photo|photograph|picture|image)s?\b|\bshown (here|above|below)\b"
    r"|\bseen (here|above)\b",
    re.I,
)
# "Which of these ... was not ...": the answer is the choice that is absent, meaningless without the choices.
NEGATED_PICK = re.compile(
    r"(?i:\b(?:of these|of the following)\b[^?]*\bnot\b|\bdefinitely not\b|\bnot mentioned\b)|\bNOT\b"
)
NAME_TOKEN = re.compile(r"^[A-Z][\w'’.-]*$")
NAME_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"}
SECOND_LEVEL = {"co", "com", "org", "net", "gov", "ac", "edu"}


# ---------------------------------------------------------------- reading the repository


class Repo:
    """Read-only access to a bare mirror or a checkout, restricted to the allowed prefixes."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.checkout = (self.path / "past").is_dir()

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], capture_output=True, text=True, check=True
        ).stdout

    def commit(self) -> str:
        """The commit id, for the README (a checkout without .git gives 'unknown', not an enclosing repo's)."""
        if self.checkout and not (self.path / ".git").exists():
            return "unknown"
        try:
            return self._git("rev-parse", "HEAD").strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return "unknown"

    def list(self, prefix: str) -> list[str]:
        """File paths under one allowed prefix only (never lists the held-out years)."""
        assert prefix in SPLITS.values()
        if self.checkout:
            folder = self.path / prefix
            names = [prefix + p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        else:
            names = self._git("ls-tree", "-r", "--name-only", "HEAD", "--", prefix.rstrip("/")).split()
        return sorted(n for n in names if n.startswith(prefix))

    def read(self, name: str) -> str:
        """One file's text; refuses anything outside the allowed prefixes."""
        if not name.startswith(tuple(SPLITS.values())):
            raise ValueError(f"refusing to read {name}: outside the 2023/2024 weeks")
        if self.checkout:
            return (self.path / name).read_text(encoding="utf-8")
        return self._git("show", f"HEAD:{name}")


def read_jsonl(text: str) -> list[dict]:
    """Parse JSON lines, ignoring blank ones."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- text helpers


def norm(text: str) -> str:
    """Lower-case, whitespace-collapsed text: the same normalisation the gold matcher uses."""
    return " ".join(text.split()).lower()


def contains(haystack_norm: str, needle: str) -> bool:
    """Whole-word occurrence of needle in an already normalised haystack."""
    n = norm(needle)
    return bool(n) and re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)", haystack_norm) is not None


def truncate(text: str, limit: int = MAX_CHARS) -> str:
    """Cut to at most `limit` characters at a paragraph end, else a sentence end, else a space.

    Keeps indexing time reasonable; a cut must keep at least half of the limit.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    for sep in ("\n\n", "\n"):
        cut = head.rfind(sep)
        if cut >= limit // 2:
            return head[:cut].rstrip()
    ends = [m.end() for m in re.finditer(r"[.!?][\"”’')]?(?=\s)", text[: limit + 1]) if m.end() <= limit]
    if ends and ends[-1] >= limit // 2:
        return head[: ends[-1]]
    cut = head.rfind(" ")
    return head[:cut].rstrip() if cut >= limit // 2 else head


def publisher(url: str) -> str:
    """Registrable domain of the url's host ('www.usatoday.com' -> 'usatoday.com').

    A small heuristic instead of the public suffix list: keeps three labels for 'x.co.uk'-style hosts.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    labels = host.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def iso_date(value) -> str | None:
    """'2023/01/05' -> '2023-01-05'; anything else (missing, malformed) -> None."""
    m = re.fullmatch(r"(\d{4})[/-](\d{2})[/-](\d{2})", str(value or "").strip())
    return f"{m[1]}-{m[2]}-{m[3]}" if m else None


def doc_id(url: str) -> str:
    """Stable id from the url (articles are deduplicated by url)."""
    return "rtqa_" + hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- questions


@dataclass
class Question:
    qid: str
    week: str
    date: str | None
    text: str
    answer: str
    others: list[str]
    docs: list[str]  # ids of the question's own articles, search order
    hits: list[str] = field(default_factory=list)  # those whose truncated text holds the answer


def correct_choice(q: dict) -> tuple[str, list[str]] | None:
    """(correct choice, other choices); None when the answer index is unusable."""
    ans = q.get("answer")
    ans = ans[0] if isinstance(ans, list) and ans else ans
    choices = [" ".join(str(c).split()) for c in q.get("choices") or []]
    try:
        i = int(str(ans).strip())
    except ValueError:
        return None
    if not 0 <= i < len(choices):
        return None
    return choices[i], choices[:i] + choices[i + 1 :]


def skip_reason(question: str, answer: str) -> str | None:
    """Why a question cannot be graded by string match (None = usable)."""
    a = answer.strip().strip(".").lower()
    if len(a) < 3:
        return "short answer"
    if a in YES_NO:
        return "yes/no answer"
    if NONE_OF.search(a):
        return "none-of-the-above answer"
    if IMAGE_REF.search(question):
        return "refers to an image"
    if NEGATED_PICK.search(question):
        return "asks which choice is not"
    return None


def aliases(q: Question) -> list[str]:
    """Conservative alias group: the choice, without a leading 'The', and a person's unique last name."""
    out = [q.answer]
    if q.answer.lower().startswith("the ") and len(q.answer) > 7:
        out.append(q.answer[4:])
    words = q.answer.split()
    asks_person = re.search(r"\bwho(m|se)?\b", q.text, re.I)
    if asks_person and 2 <= len(words) <= 4 and all(NAME_TOKEN.match(w) for w in words):
        last = words[-1]
        if last.lower() not in NAME_SUFFIXES and len(last) >= 4:  # 'Key' of Francis Scott Key is a word
            others = [norm(o) for o in q.others]
            if not any(contains(o, last) for o in others) and last not in out:
                out.append(last)
    return out


def is_quiz_page(result: dict) -> bool:
    """Search results that are quiz pages list every choice: they would be false sources."""
    return "quiz" in (result.get("url") or "").lower() or "quiz" in (result.get("title") or "").lower()


def load_split(repo: Repo, prefix: str, articles: dict[str, dict], skipped: dict[str, int]) -> list[Question]:
    """All usable questions of one year, filling `articles` (deduplicated by url, first seen wins)."""
    names = repo.list(prefix)
    weeks = sorted(n[len(prefix) :].split("_")[0] for n in names if n.endswith("_qa.jsonl"))
    questions = []
    for week in weeks:
        gcs_name = f"{prefix}{week}_gcs.jsonl"
        gcs = {g["question_id"]: g for g in read_jsonl(repo.read(gcs_name))} if gcs_name in names else {}
        for raw in read_jsonl(repo.read(f"{prefix}{week}_qa.jsonl")):
            picked = correct_choice(raw)
            if picked is None:
                skipped["bad answer index"] += 1
                continue
            answer, others = picked
            reason = skip_reason(raw["question_sentence"], answer)
            if reason:
                skipped[reason] += 1
                continue
            docs = []
            for r in gcs.get(raw["question_id"], {}).get("search_result") or []:
                if len(docs) == ARTICLES_PER_QUESTION:
                    break
                url, text = r.get("url"), r.get("text")
                if not url or not isinstance(text, str) or not text.strip() or is_quiz_page(r):
                    continue
                did = doc_id(url)
                if url not in articles:
                    articles[url] = {
                        "id": did,
                        "title": r.get("title"),
                        "date": iso_date(r.get("publish_date")),
                        "source": publisher(url),
                        "url": url,
                        "text": truncate(text),
                    }
                    articles[url]["_norm"] = norm(articles[url]["text"])
                    articles[url]["_cut"] = len(text.strip()) > MAX_CHARS
                if did not in docs:
                    docs.append(did)
            q = Question(raw["question_id"], week, iso_date(raw.get("question_date")), raw["question_sentence"],
                         answer, others, docs)
            questions.append(q)
    return questions


# ---------------------------------------------------------------- sampling


def spread(questions: list[Question], rng: random.Random) -> list[Question]:
    """Round-robin over weeks (each week shuffled) so any prefix of the list covers all weeks."""
    by_week: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_week[q.week].append(q)
    queues = []
    for week in sorted(by_week):
        qs = by_week[week]
        rng.shuffle(qs)
        queues.append(qs)
    order = []
    while any(queues):
        for qs in queues:
            if qs:
                order.append(qs.pop(0))
    return order


class Selection:
    """Greedy sample keeping the invariants: answerable questions keep a source in the corpus,
    unanswerable ones have their answer in no corpus article."""

    def __init__(self, texts: dict[str, str]):
        self.texts = texts  # doc id -> normalised text
        self.answerable: list[Question] = []
        self.unanswerable: list[Question] = []
        self.corpus: set[str] = set()
        self.excluded: set[str] = set()

    def _answer_in(self, q: Question, ids) -> bool:
        return any(contains(self.texts[d], q.answer) for d in ids)

    def add_answerable(self, q: Question) -> bool:
        """Add when a source survives the exclusions and no new article gives away a held-out answer."""
        new = set(q.docs) - self.excluded - self.corpus
        if not set(q.hits) - self.excluded:
            return False
        if any(self._answer_in(u, new) for u in self.unanswerable):
            return False
        self.answerable.append(q)
        self.corpus |= new
        return True

    def add_unanswerable(self, q: Question) -> bool:
        """Add with the answer-bearing articles left out; the topic stays through its other articles."""
        keep = set(q.docs) - set(q.hits) - self.excluded
        after = (self.corpus | keep) - set(q.hits)
        if not keep or self._answer_in(q, after):
            return False
        if any(not (set(a.hits) & after) for a in self.answerable):
            return False
        if any(self._answer_in(u, keep - self.corpus) for u in self.unanswerable):
            return False
        self.unanswerable.append(q)
        self.excluded |= set(q.hits)
        self.corpus = after
        return True


def sample(questions: list[Question], texts: dict[str, str], rng: random.Random) -> Selection:
    """Pick ~250 questions spread over the weeks, about 20% of them made unanswerable."""
    sel = Selection(texts)
    for q in spread([q for q in questions if q.hits], rng):
        need_a = len(sel.answerable) < TARGET_ANSWERABLE
        need_u = len(sel.unanswerable) < TARGET_UNANSWERABLE
        if not (need_a or need_u):
            break
        want_u = need_u and (not need_a or rng.random() < 0.2)
        if want_u and sel.add_unanswerable(q):
            continue
        if need_a:
            sel.add_answerable(q)
    return sel


def check(sel: Selection) -> None:
    """Re-verify the invariants on the final corpus (cheap; guards the incremental bookkeeping)."""
    for u in sel.unanswerable:
        assert not sel._answer_in(u, sel.corpus), u.qid
    for a in sel.answerable:
        assert set(a.hits) & sel.corpus, a.qid


# ---------------------------------------------------------------- output


def gold_rows(sel: Selection) -> list[dict]:
    """Gold lines in the project's format, answerable and unanswerable mixed, sorted by id."""
    rows = []
    for q in sel.answerable:
        sources = [d for d in q.hits if d in sel.corpus]
        rows.append({"id": q.qid, "question": q.text, "must": [aliases(q)], "sources": sources,
                     "answerable": True, "kind": "fact", "date": q.date})
    for q in sel.unanswerable:
        rows.append({"id": q.qid, "question": q.text, "must": [], "sources": [],
                     "answerable": False, "kind": "unanswerable", "date": q.date})
    # The source files repeat a few question ids within a week (the same quiz item twice): keep one.
    unique = {r["id"]: r for r in reversed(rows)}
    return sorted(unique.values(), key=lambda r: qid_key(r["id"]))


def qid_key(qid: str) -> tuple[str, int, str]:
    """Sort '20230106_10' after '20230106_2' (week, then number)."""
    week, _, num = qid.partition("_")
    return week, int(num) if num.isdigit() else 0, qid


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, UTF-8, stable key order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_split(repo: Repo, split: str, out: Path) -> dict:
    """Load, sample and write one split; returns its counts for the summary and README."""
    articles: dict[str, dict] = {}
    skipped: dict[str, int] = defaultdict(int)
    questions = load_split(repo, SPLITS[split], articles, skipped)
    by_id = {a["id"]: a for a in articles.values()}
    texts = {d: a["_norm"] for d, a in by_id.items()}
    for q in questions:
        q.hits = [d for d in q.docs if contains(texts[d], q.answer)]
    sel = sample(questions, texts, random.Random(SEED))
    check(sel)
    corpus = [{k: v for k, v in by_id[d].items() if not k.startswith("_")} for d in sorted(sel.corpus)]
    gold = gold_rows(sel)
    write_jsonl(out / split / "corpus.jsonl", corpus)
    write_jsonl(out / split / "gold.jsonl", gold)
    weeks = sorted({q.week for q in questions})
    return {
        "split": split,
        "year": SPLITS[split].split("/")[1],
        "weeks": len(weeks),
        "weeks_used": len({q.week for q in sel.answerable + sel.unanswerable}),
        "loaded": len(questions) + sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        "no_answer_in_articles": sum(1 for q in questions if not q.hits),
        "questions": len(gold),
        "answerable": len(sel.answerable),
        "unanswerable": len(sel.unanswerable),
        "articles": len(corpus),
        "dated": sum(1 for a in corpus if a["date"]),
        "truncated": sum(1 for d in sel.corpus if by_id[d]["_cut"]),
        "chars": sum(len(a["text"]) for a in corpus),
    }


def readme(commit: str, stats: list[dict]) -> str:
    """The generated OUT/README.md: provenance, license warning, split rule, counts, truncation."""
    lines = [
        "# RealTimeQA in the gold format (generated: do not edit, do not commit)",
        "",
        f"Generated by `eval/realtimeqa.py` from RealTimeQA ({UPSTREAM}), commit `{commit}`.",
        "",
        "**The data has no license. It must never be committed**: `eval/data/` is in `.gitignore`.",
        "",
        "## Splits",
        "",
        "- `calib/`: weeks of 2023 (calibration).",
        "- `test/`: weeks of 2024 (test).",
        "- Weeks from 2025 on are held out: the converter never lists, reads or converts them.",
        "",
        "| split | year | weeks (used) | questions | answerable | unanswerable | articles | dated | characters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        lines.append(f"| {s['split']} | {s['year']} | {s['weeks']} ({s['weeks_used']}) | {s['questions']} | "
                     f"{s['answerable']} | {s['unanswerable']} | {s['articles']} | {s['dated']} | {s['chars']} |")
    lines += [
        "",
        "## How it was built",
        "",
        f"- Each question's articles are its first {ARTICLES_PER_QUESTION} web-search results (`*_gcs.jsonl`) "
        "that have text; quiz pages (url or title with 'quiz') are skipped since they list every choice.",
        "- Articles are deduplicated by url within a split; `id` = `rtqa_` + sha1(url)[:16]; `source` is the "
        "url's registrable domain; `date` is the search result's `publish_date`, or null (never the search time).",
        f"- **Truncation**: each article's text is cut to at most {MAX_CHARS} characters at a paragraph end "
        "(else a sentence end, else a space) to keep indexing time reasonable; "
        + ", ".join(f"{s['split']}: {s['truncated']} of {s['articles']} articles truncated" for s in stats) + ".",
        "- A question is usable when its correct choice occurs (case-insensitive, whitespace-normalised, whole "
        "words) in one of its own truncated articles; `sources` are those articles.",
        "- `must` holds one alias group: the choice, the choice without a leading 'The', and for a 'who' question "
        "whose answer looks like a name, the last name when no other choice contains it.",
        "- Unanswerable questions (~20%, seeded): the articles holding their answer are left out of the corpus, "
        "their other articles stay (the topic is present); the answer occurs in no article of the split's corpus.",
        "- Skipped: answers under 3 characters, yes/no/true/false, 'none/all of the above', questions about "
        "an image and 'which of these ... is not' questions.",
        f"- Questions are sampled round-robin over the weeks with random.Random({SEED}).",
        "",
        "## Skipped per split",
        "",
    ]
    for s in stats:
        reasons = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "none"
        lines.append(f"- {s['split']}: {s['loaded']} questions in the files; skipped {reasons}; "
                     f"answer not in its articles: {s['no_answer_in_articles']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=DEFAULT_REPO, help="RealTimeQA bare mirror or checkout")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default eval/data/realtimeqa)")
    args = ap.parse_args(argv)
    repo, out = Repo(args.repo), Path(args.out)
    if not repo.path.exists():
        print(f"no such repository: {repo.path}", file=sys.stderr)
        return 2
    stats = [build_split(repo, split, out) for split in SPLITS]
    (out / "README.md").write_text(readme(repo.commit(), stats), encoding="utf-8")
    for s in stats:
        print(f"{s['split']} ({s['year']}): questions {s['questions']}, answerable {s['answerable']}, "
              f"unanswerable {s['unanswerable']}, articles {s['articles']}, characters {s['chars']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
