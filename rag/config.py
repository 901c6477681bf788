"""One frozen settings object, layered: defaults < config file < RAG_* environment < flags.

The config file is TOML with the same keys as `Settings` (`--config FILE`, `RAG_CONFIG`,
or `./rag.toml` when present). Unknown keys and wrong types are usage errors, not ignored.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rag.errors import UsageError

MODES = ("llm", "extractive", "baseline")


@dataclass(frozen=True)
class Settings:
    index: str = "index"  # index directory
    store: str | None = None  # milvus://HOST:PORT[/NAME] (token from RAG_MILVUS_TOKEN); None = the folder `index`
    model: str | None = None  # GGUF path; None = the bundled SmolLM2-135M-Instruct
    embedder: str | None = None  # sentence-transformers folder; None = bundled MiniLM
    chunk_tokens: int = 200  # embedder tokens per chunk (MiniLM's limit is 256 incl. specials)
    chunk_overlap: int = 40  # tokens of whole sentences repeated between neighbouring chunks
    k: int = 6  # chunks retrieved after fusion and duplicate collapse
    mode: str = "llm"  # llm | extractive | baseline (top sentences by cosine, for comparison)
    max_answer_tokens: int = 160
    n_ctx: int = 2048
    threads: int = 0  # 0 = physical cores - 1 (at least 1): see rag.llm.default_threads
    fast_model: bool = True  # load the bundled Q4_1 model from a Q8_0 copy made once (rag.llm.fast_copy)
    cache_dir: str | None = None  # derived files (that copy); None = the user's cache folder
    lock_timeout: float = 10.0  # seconds a second writer waits for the index lock
    llm_url: str | None = None  # an OpenAI-compatible server (http://HOST:PORT/v1) instead of a local GGUF
    llm_model: str | None = None  # the model name on that server; None = the first one it lists
    llm_api_key: str | None = None  # its API key (set RAG_LLM_API_KEY rather than writing it in a file)
    llm_timeout: float = 120.0  # seconds to wait for the server's next piece of an answer

    def validate(self) -> Settings:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.k < 1:
            raise UsageError(f"k must be at least 1, not {self.k}")
        if not 16 <= self.chunk_tokens <= 254:
            raise UsageError(f"chunk_tokens must be between 16 and 254, not {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise UsageError("chunk_overlap must be at least 0 and under half of chunk_tokens")
        if self.max_answer_tokens < 8 or self.n_ctx < 256:
            raise UsageError("max_answer_tokens must be >= 8 and n_ctx >= 256")
        if self.store:
            from rag.stores import parse_store  # a bad store URI is a usage error before anything loads

            parse_store(self.store)
        return self


_FIELDS = {f.name: f for f in fields(Settings)}
OPTIONAL = ("store", "model", "embedder", "cache_dir", "llm_url", "llm_model", "llm_api_key")


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = type(getattr(Settings(), name))
    if value is None or value == "":
        return None if name in OPTIONAL else getattr(Settings(), name)
    try:
        if kind is bool:
            words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                     "off": False}
            return value if isinstance(value, bool) else words[str(value).strip().lower()]
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError, KeyError):
        raise UsageError(f"{origin}: {name} must be a {kind.__name__}, not {value!r}") from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise UsageError(f"config file {path}: unknown keys {', '.join(unknown)}",
                         f"known keys: {', '.join(_FIELDS)}")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def load_settings(flags: dict[str, Any] | None = None, config_file: str | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Build the Settings for this run. `flags` holds only the options the user gave."""
    environ = os.environ if environ is None else environ
    settings = Settings()
    path = config_file or environ.get("RAG_CONFIG")
    if path:
        settings = replace(settings, **_from_file(Path(path)))
    elif Path("rag.toml").is_file():
        settings = replace(settings, **_from_file(Path("rag.toml")))
    env = {name: _coerce(name, environ[f"RAG_{name.upper()}"], f"RAG_{name.upper()}")
           for name in _FIELDS if f"RAG_{name.upper()}" in environ}
    settings = replace(settings, **env)
    given = {k: v for k, v in (flags or {}).items() if k in _FIELDS and v is not None}
    return replace(settings, **given).validate()
