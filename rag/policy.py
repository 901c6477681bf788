"""The answer policy: every threshold of the answer path, and the one abstain decision.

Thresholds live here, not in the modules that use them, so that calibration touches one file.
The abstain decision is one logistic score over a few evidence features (see `features` in
rag.evidence); no single feature refuses an answer on its own. Its weights and cut-off are fitted
by `eval/calibrate.py` on the calibration split only (RealTimeQA weeks of 2023, see
eval/realtimeqa.py), never on the test split or the committed gold sets, and the script prints the
block below for pasting.
"""

from __future__ import annotations

import math

# --- retrieval (rag.evidence.parts_not_found) ---------------------------------------------------
STANDALONE_WORDS = 3  # a part of a question with this many content words can be searched on its own

# --- evidence selection (rag.evidence.select) ---------------------------------------------------
DENSE_WEIGHT = 0.6  # relevance = 0.6 * cosine + 0.4 * question-word coverage (+ bonuses)
CONTEXT_WEIGHT = 0.2  # weight of what reading a sentence after the one before it adds to its cosine (`--selection`)
CONTEXT_POOL = 24  # ... for this many leading candidates: 4x the sentences kept, a third of the embedding work
ANSWER_TYPE_BONUS = 0.1  # the sentence holds something of the kind asked for that the question lacks
SOURCE_BONUS = 0.1  # the question names this article's publisher ("according to X")
NOVELTY_WEIGHT = 0.2  # times the share of the sentence's words the question lacks (calibration split)
NEW_NAME_BONUS = 0.1  # a who/which/where question, and the sentence names something the question does not
RECENT_BONUS = 0.1  # a "this week" question, and the sentence's article is from those days (calibration split)
NEWS_DAYS = 9  # any other question: the same bonus for the days before asking (rag.filters.news_window)
MIN_WORDS = 4  # shorter "sentences" are headings or bylines, not evidence
PER_ARTICLE = 6  # at most this many evidence sentences from one article; 6 of 6 kept: no cap (`--selection` grid)
NEAR_COPY = 0.75  # token Jaccard at which two sentences say the same thing
EVIDENCE_SENTENCES = 12  # sentences an answer may quote (`--selection` grid)
PROMPT_SENTENCES = 6  # ... the best of which the model reads: each one more lengthens its prompt and first-token wait

# --- answers (rag.pipeline, rag.citations) -------------------------------------------------------
SUPPORT_THRESHOLD = 0.6  # share of a sentence's content words its cited source must hold
CLAUSE_TOKENS = 2  # clauses with at least this many content words are checked on their own
CLAUSE_FLOOR = 0.6  # ... and must find this share of them in the cited source
REPLACE_FLOOR = 0.25  # an unsupported sentence this close to an evidence sentence is replaced by it
EXTRACTIVE_MAX = 5  # sentences in an extractive answer (`eval/calibrate.py --selection`; README "Eval")
GROUP_SHARE = 0.86  # another article's sentence joins the extractive answer when this close to the best (`--selection`)
BASELINE_SENTENCES = 2  # `--mode baseline`: the top sentences by embedder cosine, nothing else

# --- the abstain decision ------------------------------------------------------------------------
# Features, each in [0, 1] (rag.evidence.features):
#   best       relevance of the best evidence sentence
#   cosine     embedder cosine of the best evidence sentence
#   keys       share of the question's names and numbers found in the retrieved articles
#              (their text, title, publisher and date)
#   covered    share of the question's content words found around the best evidence sentence
#              (sentence, title, publisher, date); for a question that asks several things, the
#              mean over its parts, each around the best sentence that speaks to it
#   typed      1 when the question asks for no particular kind of answer, or an evidence
#              sentence holds one (a date for "when", a number for "how many"); else 0
FEATURES = ("best", "cosine", "keys", "covered", "typed")
# The settings above that move what the features read (relevance, the evidence kept, the days
# preferred). The decision is fitted at their values and FITTED_AT records them: a test fails when
# one changes without a refit (a stale fit once outlived two changes to the relevance it weighs).
FEATURE_SETTINGS = ("STANDALONE_WORDS", "DENSE_WEIGHT", "CONTEXT_WEIGHT", "CONTEXT_POOL", "ANSWER_TYPE_BONUS",
                    "SOURCE_BONUS", "NOVELTY_WEIGHT", "NEW_NAME_BONUS", "RECENT_BONUS", "NEWS_DAYS", "MIN_WORDS",
                    "PER_ARTICLE", "NEAR_COPY", "EVIDENCE_SENTENCES")
# fitted by eval/calibrate.py (begin)
# calibration: eval/data/realtimeqa/calib/gold.jsonl, 249 questions:
# false-abstain 3.0%, abstain recall 16.3% (49 unanswerable)
WEIGHTS = {"best": 1.177, "cosine": 1.493, "keys": 0.367, "covered": 0.961, "typed": -0.000}
BIAS = -2.819
ANSWER_AT = 0.333  # answer when the score is at least this
FITTED_AT = {
    "STANDALONE_WORDS": 3, "DENSE_WEIGHT": 0.6, "CONTEXT_WEIGHT": 0.2, "CONTEXT_POOL": 24,
    "ANSWER_TYPE_BONUS": 0.1, "SOURCE_BONUS": 0.1, "NOVELTY_WEIGHT": 0.2, "NEW_NAME_BONUS": 0.1,
    "RECENT_BONUS": 0.1, "NEWS_DAYS": 9, "MIN_WORDS": 4, "PER_ARTICLE": 6,
    "NEAR_COPY": 0.75, "EVIDENCE_SENTENCES": 12,
}
# fitted by eval/calibrate.py (end)


def feature_settings() -> dict[str, float]:
    """The current values of FEATURE_SETTINGS: what FITTED_AT must equal."""
    return {name: globals()[name] for name in FEATURE_SETTINGS}


def answer_score(values: dict[str, float]) -> float:
    """Probability-like score in (0, 1) that the evidence holds the answer."""
    z = BIAS + sum(WEIGHTS[name] * values[name] for name in FEATURES)
    return 1.0 / (1.0 + math.exp(-z))
