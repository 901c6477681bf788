"""The dev-set converter (eval/realtimeqa.py) and the abstain calibration (eval/calibrate.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

EVAL = Path(__file__).resolve().parents[1] / "eval"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"eval_{name}", EVAL / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _week(folder: Path, week: str, items: list[tuple[str, list[str], int, list[tuple[str, str]]]]) -> None:
    """One RealTimeQA week: (question, choices, answer index, [(url, text)...]) per question."""
    folder.mkdir(parents=True, exist_ok=True)
    qa, gcs = [], []
    for n, (question, choices, answer, results) in enumerate(items):
        qid = f"{week}_{n}"
        qa.append({"question_id": qid, "question_date": f"{week[:4]}/{week[4:6]}/{week[6:]}",
                   "question_sentence": question, "choices": choices, "answer": [str(answer)]})
        gcs.append({"question_id": qid, "search_result": [
            {"url": url, "title": url.rsplit("/", 1)[-1], "text": text, "publish_date": "2023-01-02"}
            for url, text in results]})
    (folder / f"{week}_qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    (folder / f"{week}_gcs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gcs))


def _year(repo: Path, year: str) -> None:
    items = []
    for n in range(12):
        answer = f"Quillon{year}x{n}"
        items.append((f"Which company did regulator number {n} fine this week?", [answer, f"Other{n}", "Nobody"], 0,
                      [(f"https://news{n}.example/{year}/a", f"The regulator fined {answer} for late filings."),
                       (f"https://wire{n}.example/{year}/b", f"Regulator number {n} announced a fine on Monday.")]))
    _week(repo / "past" / year, f"{year}0106", items)


def test_converter_writes_gold_and_never_reads_held_out_years(tmp_path):
    realtimeqa = _load("realtimeqa")
    repo, out = tmp_path / "repo", tmp_path / "out"
    _year(repo, "2023")
    _year(repo, "2024")
    (repo / "past" / "2025").mkdir(parents=True)
    (repo / "past" / "2025" / "20250103_qa.jsonl").write_text("{ not json: reading this is a bug")
    assert realtimeqa.main(["--repo", str(repo), "--out", str(out)]) == 0
    for split, year in (("calib", "2023"), ("test", "2024")):
        corpus = {json.loads(line)["id"]: json.loads(line) for line in (out / split / "corpus.jsonl").open()}
        gold = [json.loads(line) for line in (out / split / "gold.jsonl").open()]
        assert gold and all(g["id"].startswith(year) for g in gold)
        assert any(g["answerable"] for g in gold) and any(not g["answerable"] for g in gold)
        texts = " ".join(a["text"] for a in corpus.values())
        for g in gold:
            if g["answerable"]:  # the answer sits in one of its own sources, which are in the corpus
                assert all(s in corpus for s in g["sources"])
                assert any(g["must"][0][0] in corpus[s]["text"] for s in g["sources"])
            else:  # the answer is in no article of the corpus
                assert g["must"] == [] and f"Quillon{year}x{g['id'].split('_')[1]}" not in texts


def test_calibration_fits_the_direction_and_keeps_false_abstains_in_bounds():
    calibrate = _load("calibrate")
    rng = np.random.default_rng(0)
    answerable = rng.normal(0.7, 0.1, size=(200, 2))
    unanswerable = rng.normal(0.4, 0.1, size=(50, 2))
    x = np.vstack([answerable, unanswerable])
    y = np.concatenate([np.ones(200), np.zeros(50)])
    w, b = calibrate.fit_logistic(x, y)
    assert (w > 0).all()  # more evidence, more likely answerable
    scores = 1 / (1 + np.exp(-(x @ w + b)))
    for rate in (0.0, 0.03, 0.10):
        cutoff = calibrate.pick_cutoff(scores, y, rate)
        false_abstain = np.mean(scores[y == 1] < cutoff)
        assert false_abstain <= rate
        assert np.mean(scores[y == 0] < cutoff) > 0.5  # and it still catches most of the easy unanswerable


def test_the_printed_block_is_the_policy_block_with_the_settings_it_was_fitted_at(monkeypatch):
    from rag import policy
    calibrate = _load("calibrate")
    monkeypatch.setattr(policy, "CONTEXT_WEIGHT", 0.35)  # a setting the features read, changed
    block = calibrate.fitted_block(np.array([1.0, 2.0, 0.5, 0.25, -0.125]), -2.5, 0.4, ["calibration: 3 questions"])
    lines = block.splitlines()
    assert lines[:2] == ["# fitted by eval/calibrate.py (begin)", "# calibration: 3 questions"]
    assert lines[-1] == "# fitted by eval/calibrate.py (end)"
    assert max(len(line) for line in lines) <= 120  # ruff's line length: it pastes into rag/policy.py as printed
    fitted: dict = {}
    exec(block, {}, fitted)  # the block is Python: what runs in rag/policy.py once pasted
    assert fitted["WEIGHTS"] == {"best": 1.0, "cosine": 2.0, "keys": 0.5, "covered": 0.25, "typed": -0.125}
    assert (fitted["BIAS"], fitted["ANSWER_AT"]) == (-2.5, 0.4)
    assert fitted["FITTED_AT"] == policy.feature_settings() and fitted["FITTED_AT"]["CONTEXT_WEIGHT"] == 0.35


def test_the_selection_grid_embeds_each_text_once_and_keeps_its_vector():
    calibrate = _load("calibrate")
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.asarray([[len(t), len(calls)] for t in texts], dtype=np.float32)

    cached = calibrate.memoised(embed)
    first = cached(["a", "bb"])
    again = cached(["bb", "ccc", "a"])
    assert calls == [["a", "bb"], ["ccc"]]  # only the new text reaches the embedder
    assert (again[0] == first[1]).all() and (again[2] == first[0]).all()  # the same vector every time


def test_the_selection_pick_is_the_best_sum_of_the_three_rates(capsys):
    calibrate = _load("calibrate")
    rates = [(0.0, 3, 6, 0.85, 4, 0.60, 0.70, 0.20), (0.3, 4, 10, 0.87, 5, 0.62, 0.71, 0.20),
             (0.5, 6, 8, 0.90, 3, 0.70, 0.60, 0.10)]
    calibrate.print_selection([((w, p, k, s, n), {"accuracy": a, "citation_precision": c, "abstain_recall": r,
                                                  "false_abstain_rate": 0.03}) for w, p, k, s, n, a, c, r in rates])
    assert ("CONTEXT_WEIGHT = 0.3\nPER_ARTICLE = 4\nEVIDENCE_SENTENCES = 10\nGROUP_SHARE = 0.87\nEXTRACTIVE_MAX = 5"
            in capsys.readouterr().out)


def test_answer_shapes_bound_the_extractive_answer_from_the_same_evidence():
    from rag.pipeline import extractive
    from rag.types import Evidence

    calibrate = _load("calibrate")

    def item(n, text, doc, start, score):
        return Evidence(n=n, doc_id=doc, chunk_id=f"{doc}:0-1", start=start, end=start + len(text), text=text,
                        title="t", date="2024-04-01", source=None, score=score)

    best = item(1, "The council approved the new stadium budget on Monday.", "a", 100, 0.9)
    after = item(2, "The budget sets aside 40 million for the roof.", "a", best.end + 1, 0.5)
    far = item(3, "Council members also discussed parking fees at length.", "a", after.end + 300, 0.6)
    other = item(4, "A rival bid for the stadium was turned down last year.", "b", 0, 0.7)
    question, items = "What did the council approve on Monday?", [other, far, after, best]
    shapes = calibrate.answer_shapes(question, items)
    cited = {shape: [s.citations[0] for s in sentences] for shape, sentences in shapes.items()}
    assert list(cited) == list(calibrate.SHAPES)
    assert cited["best sentence"] == [1]
    assert cited["best sentence's article"] == [1, 2, 3]
    assert cited["every evidence sentence"] == [1, 2, 3, 4]
    assert shapes["extractive answer"] == extractive(question, items)  # the answer `rag ask` gives
    assert calibrate.answer_shapes("Anything?", []) == dict.fromkeys(calibrate.SHAPES, [])


def test_the_selection_grid_scores_the_shipped_settings_as_rag_eval_does(tmp_path, monkeypatch, real_embedder,
                                                                         counter):
    """The grid picks settings by what `rag eval` would report: at the shipped point both must
    agree on every rate. eval/news has answers whose sentences come from articles of different
    dates, so the date labels `rag ask` adds count (a grid without them was a question off)."""
    from rag import policy
    from rag.config import Settings
    from rag.evaluate import load_gold, run_eval
    from rag.indexer import index_paths
    from rag.pipeline import Pipeline

    index = tmp_path / "index"
    index_paths([str(EVAL / "news" / "articles")], Settings(index=str(index)), embedder=real_embedder,
                counter=counter)
    calibrate = _load("calibrate")
    monkeypatch.setattr(calibrate, "CONTEXT_WEIGHTS", (policy.CONTEXT_WEIGHT,))
    monkeypatch.setattr(calibrate, "PER_ARTICLES", (policy.PER_ARTICLE,))
    monkeypatch.setattr(calibrate, "EVIDENCE_COUNTS", (policy.EVIDENCE_SENTENCES,))
    monkeypatch.setattr(calibrate, "GROUP_SHARES", (policy.GROUP_SHARE,))
    monkeypatch.setattr(calibrate, "EXTRACTIVE_MAXES", (policy.EXTRACTIVE_MAX,))
    gold = load_gold(EVAL / "news" / "gold.jsonl")
    [(_, grid)] = calibrate.selection_grid(gold, str(index))

    pipeline = Pipeline(Settings(index=str(index), mode="extractive"))
    try:
        _, report = run_eval(gold, lambda q, day: pipeline.ask(q, as_of=day), {})
    finally:
        pipeline.close()
    for name in ("accuracy", "citation_precision", "citation_recall", "abstain_recall", "false_abstain_rate"):
        assert grid[name] == report["metrics"][name], name


def test_two_part_questions_join_one_weeks_questions_and_need_both_answers(tmp_path, monkeypatch):
    from rag.evaluate import load_gold
    from rag.words import question_parts

    two_part = _load("two_part")
    gold = [
        {"id": "20230106_0", "question": "Which team won the cup?", "must": [["Rovers"]], "sources": ["a"],
         "answerable": True, "date": "2023-01-05"},
        {"id": "20230106_1", "question": "Who was fined this week?", "must": [["Pulsefit"]], "sources": ["b", "a"],
         "answerable": True, "date": "2023-01-06"},
        {"id": "20230106_2", "question": "Which film won?", "must": [], "sources": [], "answerable": False},
        {"id": "20230106_3", "question": "It rained. What closed?", "must": [["Port"]], "sources": ["c"],
         "answerable": True},
        {"id": "20230113_0", "question": "Where did the storm land?", "must": [["Palmera"]], "sources": ["d"],
         "answerable": True},
    ]
    joined = two_part.two_part(gold)
    assert joined == [{"id": "20230106_0+1", "question": "Which team won the cup, and who was fined this week?",
                       "must": [["Rovers"], ["Pulsefit"]], "sources": ["a", "b"], "answerable": True,
                       "kind": "multi", "date": "2023-01-06"}]  # no unanswerable, two-sentence or cross-week pair
    assert question_parts(joined[0]["question"]) == ["Which team won the cup", "who was fined this week"]
    src, out = tmp_path / "gold.jsonl", tmp_path / "two_part.jsonl"
    src.write_text("".join(json.dumps(g) + "\n" for g in gold))
    monkeypatch.setattr(sys, "argv", ["two_part.py", str(src), str(out)])
    two_part.main()
    assert load_gold(out) == joined  # a valid gold file
