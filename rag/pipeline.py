"""ask(): retrieve -> select evidence -> decide whether to answer -> generate -> verify -> cite.

Generation comes second on purpose: the evidence is chosen and judged before any model runs,
the model sees only a few numbered sentences, and every sentence it writes is checked against
the source it cites. What cannot be verified is replaced by the evidence sentence it should have
used, so the default 135M model and a user's 8B model go through the same steps; a better model
simply has more of its own sentences survive verification.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from rag import citations, evidence, policy, prompts
from rag.config import MODES, Settings
from rag.errors import RagError, UsageError
from rag.filters import news_window
from rag.llm import LLM, GenerationConfig, load_model, resolve_model_path
from rag.retrieve import Filters, Retriever
from rag.stores import open_store, query_embedder_for
from rag.types import Answer, Citation, Evidence, Hit, Retrieved, Sentence
from rag.words import content_tokens, covered, passage_tokens

MAX_QUESTION_CHARS = 2000
ANSWER_MARGIN_TOKENS = 16

_HAS_WORD = re.compile(r"\w")


def check_question(question: str) -> str:
    """The question, trimmed; a UsageError for one that cannot be asked."""
    q = " ".join(question.split())
    example = 'e.g. rag ask "What did the council decide?"'
    if not q:
        raise UsageError("the question is empty", example)
    if len(q) > MAX_QUESTION_CHARS:
        raise UsageError(f"the question is {len(q):,} characters; keep it under {MAX_QUESTION_CHARS:,}",
                         "ask one question at a time")
    if not _HAS_WORD.search(q):
        raise UsageError("the question has no words", example)
    return q


@dataclass
class Draft:
    """What generation produced before verification, for display and the eval."""

    text: str = ""
    first_token_ms: int | None = None
    generate_ms: int = 0
    tokens: int = 0


class Pipeline:
    """Everything loaded once (index, embedder, model) and reused across questions."""

    def __init__(self, settings: Settings, *, llm: LLM | None = None, embedder=None,
                 model_flag: str | None = None, preload_llm: bool = False):
        self.settings = settings
        self._llm = llm
        self._model_flag = model_flag
        self._loading: tuple[threading.Thread, dict] | None = None
        if preload_llm and llm is None:
            self._start_loading()
        try:
            self.embedder = embedder or query_embedder_for(settings)
            self.reader = open_store(settings, self.embedder.identity)
        except BaseException:
            self._drop_loading()
            raise
        self.retriever = Retriever(self.reader, self.embedder.embed)

    def _start_loading(self) -> None:
        """Load the model in a thread while the index opens and retrieval runs (a one-shot `rag ask`
        would otherwise wait for the two one after the other); `llm` waits for it."""
        result: dict = {}

        def load() -> None:
            try:
                result["llm"] = load_model(self._model_flag, self.settings)
            except BaseException as e:  # re-raised in the asking thread, where it is reported
                result["error"] = e

        thread = threading.Thread(target=load, name="rag-model-load", daemon=True)
        thread.start()
        self._loading = (thread, result)

    @property
    def llm(self) -> LLM:
        if self._llm is None and self._loading is not None:
            thread, result = self._loading
            thread.join()
            self._loading = None
            if "error" in result:
                raise result["error"]
            self._llm = result["llm"]
        if self._llm is None:
            self._llm = load_model(self._model_flag, self.settings)
        return self._llm

    def use_model(self, llm: LLM) -> None:
        """Answer with `llm` from now on (chat's /model) and free the model used so far."""
        self._drop_loading()
        old, self._llm = self._llm, llm
        if old is not None and hasattr(old, "close"):
            old.close()

    def model_name(self) -> str:
        """The model's file name without loading it (chat's toolbar must not trigger a load)."""
        if self._llm is not None:
            return self._llm.name
        if self.settings.llm_url and not self._model_flag:
            return f"{self.settings.llm_model or 'server model'} @ {self.settings.llm_url}"
        try:
            return resolve_model_path(self._model_flag, self.settings.model).name
        except RagError:
            return "none"

    def _drop_loading(self) -> None:
        """Wait for a model load still running and free what it loaded (never left half-loaded)."""
        if self._loading is not None:
            self._loading[0].join()
            loaded = self._loading[1].get("llm")
            self._loading = None
            if loaded is not None and hasattr(loaded, "close"):
                loaded.close()

    def close(self) -> None:
        self._drop_loading()
        self.reader.close()

    # --- the one public step ---------------------------------------------------------------

    def ask(self, question: str, *, k: int | None = None, mode: str | None = None,
            filters: Filters | None = None, on_token: Callable[[str], None] | None = None,
            as_of: str | None = None) -> Answer:
        """Answer one question. `as_of` (ISO date, default today) is the day it is asked: what
        "this week" or "recently" in it refer to."""
        started = time.perf_counter()
        q = check_question(question)
        k = k or self.settings.k
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")

        as_of = as_of or date.today().isoformat()
        if mode == "baseline":  # the plain comparison point: top sentences by cosine, no decision, no model
            hits = self.retriever.search(q, k, filters, as_of)
            chosen = evidence.top_by_cosine(q, hits, self.embedder.embed)
            assessment = evidence.Assessment(bool(chosen), "baseline answers whenever a passage was found")
        else:
            hits, apart = self.search(q, k, filters, as_of)
            window = news_window(q, as_of)
            chosen = evidence.select(q, hits, self.embedder.embed, policy.EVIDENCE_SENTENCES, window, apart)
            assessment = evidence.assess(q, chosen, hits)
        retrieve_ms = _ms(started)
        retrieved = [Retrieved(h.rank, h.doc_id, h.chunk_id, round(h.score, 6), list(h.also_reported_by),
                               h.dense_rank, h.lexical_rank, round(h.dense_score, 4)) for h in hits]
        model_info = {"llm": None, "embedder": self.embedder.identity["name"]}
        notes = [] if assessment.answerable else [f"abstained: {assessment.reason}"]

        draft = Draft()
        sentences: list[Sentence] = []
        if assessment.answerable and mode == "baseline":
            sentences = [Sentence(e.text, [e.n], True) for e in chosen]
        elif assessment.answerable and mode == "extractive":
            sentences = extractive(q, chosen)
        elif assessment.answerable:
            model_info["llm"] = self.llm.name
            packed = self._pack(q, chosen[:policy.PROMPT_SENTENCES])
            draft = self._generate(q, packed, on_token)
            verified = citations.verify(draft.text, packed, policy.SUPPORT_THRESHOLD, question=q)
            notes += verified.notes
            sentences = verified.sentences
            if verified.abstained:
                notes.append("the model's answer could not be verified; answering with the evidence")
                sentences = extractive(q, chosen)
            else:
                sentences = complete(q, sentences, chosen, notes)

        sentences, used = as_read(sentences, chosen)
        abstained = not sentences
        timings = {"retrieve": retrieve_ms, "total": _ms(started)}
        if draft.first_token_ms is not None:
            timings.update(first_token=draft.first_token_ms, generate=draft.generate_ms,
                           tokens_per_s=int(draft.tokens / max(draft.generate_ms / 1000, 1e-6)))
        return Answer(
            question=q,
            answer=prompts.ABSTAIN_PHRASE if abstained else compose(sentences),
            abstained=abstained,
            sentences=sentences,
            citations=[self._citation(e) for e in used],
            retrieved=retrieved,
            model=model_info,
            timings_ms=timings,
            mode=mode,
            notes=notes,
            draft=draft.text or None,
        )

    # --- steps -----------------------------------------------------------------------------

    def search(self, question: str, k: int, filters: Filters | None = None,
               as_of: str | None = None) -> tuple[list[Hit], bool]:
        """The question's top k chunks; then, for each part of it that none of them speaks to
        ("..., and which star ...?": a second story, see evidence.parts_not_found), that part's
        own top k // 2 chunks not already found. Also whether any part was searched apart: its
        evidence is then scored part by part (evidence.select)."""
        hits = self.retriever.search(question, k, filters, as_of)
        apart = evidence.parts_not_found(question, hits)
        for part in apart:
            hits = self.retriever.search_more(hits, part, max(1, k // 2), filters, as_of)
        return hits, bool(apart)

    def _messages(self, question: str, items: list[Evidence]) -> list[dict]:
        lines = "\n".join(f"[{e.n}] ({_label(e)}) {prompts.sanitize_source_text(e.text)}" for e in items)
        return [
            {"role": "system", "content": prompts.load("answer_system").render(abstain=prompts.ABSTAIN_PHRASE)},
            {"role": "user", "content": prompts.load("answer_user").render(sources=lines, question=question)},
        ]

    def _pack(self, question: str, items: list[Evidence]) -> list[Evidence]:
        """The most evidence that fits n_ctx with room for the answer; the lowest ranked goes first."""
        budget = self.llm.n_ctx - self.settings.max_answer_tokens - ANSWER_MARGIN_TOKENS
        packed = list(items)
        while packed and self.llm.count_chat_tokens(self._messages(question, packed)) > budget:
            packed.pop()
        if not packed:
            raise UsageError("the question leaves no room for sources in the model's context",
                             "ask a shorter question or raise n_ctx")
        return packed

    def _generate(self, question: str, items: list[Evidence], on_token) -> Draft:
        config = GenerationConfig(max_tokens=self.settings.max_answer_tokens, stop=("<|im_end|>", "\n\n\n"))
        draft = Draft()
        started = time.perf_counter()
        pieces: list[str] = []
        for piece in self.llm.stream_chat(self._messages(question, items), config):
            if draft.first_token_ms is None:
                draft.first_token_ms = _ms(started)
            pieces.append(piece)
            if on_token:
                on_token(piece)
        draft.text = "".join(pieces)
        draft.generate_ms = _ms(started)
        draft.tokens = len(pieces)
        return draft

    def _citation(self, e: Evidence) -> Citation:
        article = self.reader.article(e.doc_id)
        if article is None:  # a store that changes in place (Milvus) while `rag index` rewrites it
            raise RagError(f"article {e.doc_id} changed while answering (`rag index` is updating the index)",
                           "ask again")
        return Citation(n=e.n, doc_id=e.doc_id, chunk_id=e.chunk_id, title=e.title, date=e.date,
                        source=e.source, start=e.start, end=e.end, quote=article.text[e.start:e.end],
                        score=e.score, also_reported_by=list(e.also_reported_by), url=article.url,
                        page=article.page_at(e.start))


def extractive(question: str, items: list[Evidence]) -> list[Sentence]:
    """The best evidence sentence; the best one for each further thing the question asks ("..., and
    who leads it?", "... in 2019, and who in 2025?"); then any nearly as relevant one that adds what
    the answer lacks: a question word not yet covered, or another article's account (another report,
    often another event or date: the 2019 and the 2025 demands); and the other evidence sentences
    of the best one's article, however far below it.

    A news story names its subject in one sentence and gives the detail asked for in another ("...
    will not run for reelection." "She has served since 1992."): the question's words match one,
    the answer is in the other. The best sentence's article is the one most likely about the event
    asked of, and quoting more of it mixes no further source into the answer. Only evidence
    sentences are read this way (at most policy.PER_ARTICLE from one article), so the answer stays
    on the question's topic."""
    if not items:
        return []
    ranked = sorted(items, key=lambda e: -e.score)
    top = ranked[0].score
    asked = content_tokens(question)
    picked = [ranked[0]]
    # A question that asks two things ("who in 2019, and who in 2025?") gets the best sentence for
    # each part, however far below the best overall: the reader asked for both.
    for speaks in evidence.speaking_to_parts(question, ranked, lambda e: (evidence.evidence_tokens(e), e.date)):
        if speaks and not any(e in picked for e in speaks):
            picked.append(speaks[0])
    covered = set().union(*(content_tokens(e.text) for e in picked)) & asked
    articles = {e.doc_id for e in picked}
    for e in ranked[1:]:
        if len(picked) >= policy.EXTRACTIVE_MAX:
            break
        if e in picked:
            continue
        adds = content_tokens(e.text) & asked - covered
        close = e.score >= policy.GROUP_SHARE * top
        if (close and (e.doc_id not in articles or adds)) or e.doc_id == ranked[0].doc_id:
            picked.append(e)
            covered |= adds
            articles.add(e.doc_id)
    return [Sentence(e.text, [e.n], True) for e in sorted(picked, key=lambda e: e.n)]


def complete(question: str, sentences: list[Sentence], items: list[Evidence], notes: list[str]) -> list[Sentence]:
    """Add the evidence sentences the extractive answer would give that the model's answer lacks.

    A small model often answers from one source only; this keeps a second crisis (another
    article date) or the other half of a two-part question in the answer, verbatim and cited.
    A source the model cited still comes in verbatim when the model's answer drops a name or a
    number it states: a paraphrase that cites [1] can still garble what [1] says ("43.8 million"
    for "0.55%"), and the reader should see the evidence's own words.
    """
    cited = {n for s in sentences for n in s.citations}
    said = passage_tokens(" ".join(s.text for s in sentences))
    asked = content_tokens(question)
    extra = []
    for s in extractive(question, items):
        if set(s.citations) & cited:
            dropped = sorted(t for t in evidence.key_terms(s.text) - asked if not covered(t, said))
            if not dropped:
                continue
            notes.append(f"added source [{s.citations[0]}] verbatim: the model's answer drops {', '.join(dropped[:3])}")
        else:
            notes.append(f"added source [{s.citations[0]}] the model's answer left out")
        extra.append(s)
    return sentences + extra


def _label(e: Evidence) -> str:
    return ", ".join(x for x in (e.date or "date unknown", e.source) if x)


def date_sentences(sentences: list[Sentence], items: list[Evidence]) -> list[Sentence]:
    """When an answer draws on articles of different dates, order by date and say each date.

    This is what keeps the 2019 and 2025 crises apart: the reader sees which claim comes from
    which article date without opening the citations.
    """
    by_n = {e.n: e for e in items}
    dates = {by_n[s.citations[0]].date for s in sentences if s.citations}
    if len(dates) < 2:
        return sentences

    def key(s: Sentence):
        date = by_n[s.citations[0]].date if s.citations else None
        return (date is None, date or "")

    return [replace(s, label=_label(by_n[s.citations[0]])) if s.citations else s
            for s in sorted(sentences, key=key)]


def as_read(sentences: list[Sentence], items: list[Evidence]) -> tuple[list[Sentence], list[Evidence]]:
    """The sentences as the user reads them (dated when dates differ, citations renumbered 1..m),
    and the evidence they cite. `rag ask` and eval/calibrate.py both answer through this."""
    return citations.renumber(date_sentences(sentences, items), items)


def compose(sentences: list[Sentence]) -> str:
    """The answer text: each sentence with its [n] markers, prefixed by its date label if any."""
    return " ".join(f"({s.label}) {citations.render([s])}" if s.label else citations.render([s])
                    for s in sentences)


def _ms(since: float) -> int:
    return int((time.perf_counter() - since) * 1000)
