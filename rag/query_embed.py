"""Fast query and sentence embedding without torch: the same MiniLM, exported once to ONNX.

`import sentence_transformers` costs about 5.6 s (torch, transformers, scikit-learn) in every
`rag ask` process; onnxruntime + tokenizers cost about 0.25 s. So `rag index`, which has torch
loaded anyway, exports the embedder's transformer to `<index>/embedder-<fingerprint>.onnx` (beside
the state folders, shared by all of them, named by the embedder it came from) and checks it against
sentence-transformers before keeping it. Queries and evidence sentences are then embedded with
onnxruntime, with sentence-transformers' own arithmetic: token vectors averaged over the attention
mask (mean pooling), then L2-normalised.

Left out on purpose: int8 quantisation (it costs agreement with the indexed vectors), GPU
providers, and CLS/max pooling or extra Dense layers: such embedders keep sentence-transformers.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from rag.embed import Embedder, SentenceTransformerEmbedder, embedder_identity

BATCH = 32  # texts per onnxruntime call, after sorting by length so little padding is computed
CACHE = 4096  # vectors kept per process: chat turns see many of the same evidence sentences again
MIN_COSINE = 0.9999  # an export must agree this well with sentence-transformers to be kept
_PROBES = ["What did the US urge Pakistan to do?", "Ünïcødé, numbers 1,234.5 and 日本語",
           "short", "A longer sentence about the attack in Kashmir that killed more than 40 troops. " * 8]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ST = "sentence_transformers.models."


def onnx_path(index_dir: str | Path, identity: dict) -> Path:
    """Where the ONNX export of the embedder with this identity lives in an index folder."""
    return Path(index_dir) / f"embedder-{identity['fingerprint']}.onnx"


def supports_onnx(model_dir: Path) -> bool:
    """True for Transformer -> mean Pooling (-> Normalize) models: what OnnxEmbedder reproduces."""
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


class OnnxEmbedder:
    """MiniLM through onnxruntime + tokenizers; vectors match SentenceTransformerEmbedder's."""

    def __init__(self, model_dir: Path, onnx_file: Path, threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        from rag.llm import default_threads

        self.identity = embedder_identity(model_dir)
        self.onnx_file = onnx_file
        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.enable_truncation(self.identity["max_seq_length"])  # counts [CLS]/[SEP], as s-t does
        self._tok.no_padding()  # tokenizer.json pads to a fixed 128; embed() pads each batch itself
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on a shared CPU
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, unit length; batches of similar lengths, original order."""
        out = np.zeros((len(texts), self.identity["dim"]), dtype=np.float32)
        todo = sorted({t for t in texts if t not in self._cache})
        if len(self._cache) + len(todo) > CACHE:  # full: start over, re-embedding this call's cached texts too
            self._cache.clear()
            todo = sorted(set(texts))
        encodings = self._tok.encode_batch(todo)
        order = sorted(range(len(todo)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            for i, vector in zip(rows, self._embed_batch([encodings[i] for i in rows]), strict=True):
                self._cache[todo[i]] = vector
        for row, text in enumerate(texts):
            out[row] = self._cache[text]
        return out

    def _embed_batch(self, encodings) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
            types[row, :len(e.ids)] = e.type_ids
        feed = dict(zip(_INPUTS, (ids, mask, types), strict=True))
        hidden = self._session.run(None, {name: feed[name] for name in self._inputs})[0]  # (batch, width, dim)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)  # as torch.nn.functional.normalize


def query_embedder(index_dir: str | Path, model_dir: Path) -> Embedder:
    """The ONNX embedder when the index holds an export for this model, else sentence-transformers."""
    path = onnx_path(index_dir, embedder_identity(model_dir))
    if path.is_file():
        try:
            return OnnxEmbedder(model_dir, path)
        except Exception:  # a damaged export: the slow path still gives the right vectors
            pass
    return SentenceTransformerEmbedder(model_dir)


def ensure_onnx(index_dir: str | Path, embedder: SentenceTransformerEmbedder) -> str | None:
    """Export the embedder to the index folder unless already there; returns why not, or None.

    Called by `rag index`, where torch is already loaded. Older exports (other fingerprints) are
    removed. The export is kept only if it reproduces sentence-transformers' vectors.
    """
    model_dir = embedder.model_dir
    dest = onnx_path(index_dir, embedder.identity)
    if dest.is_file():
        return None
    if not supports_onnx(model_dir):
        return "its modules are not Transformer + mean Pooling"
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        export_onnx(model_dir, tmp)
        fast = OnnxEmbedder(model_dir, tmp).embed(_PROBES)
        cosine = float(np.min(np.sum(fast * embedder.embed(_PROBES), axis=1)))
        if cosine < MIN_COSINE:
            return f"the export disagrees with sentence-transformers (cosine {cosine:.5f})"
        os.replace(tmp, dest)
    except Exception as e:  # any failure just means queries take the slow path
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    finally:
        tmp.unlink(missing_ok=True)
    for old in Path(index_dir).glob("embedder-*.onnx"):
        if old != dest:
            old.unlink(missing_ok=True)
    return None


def export_onnx(model_dir: Path, dest: Path) -> None:
    """Trace the Hugging Face transformer (last_hidden_state) to ONNX with dynamic batch and length.

    Eager attention is traced (not SDPA) so that the graph applies the padding mask explicitly;
    the example batch has a padded row so the traced mask path is the general one.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[101, 2054, 2106, 1996, 2149, 102], [101, 7270, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(model), (ids, mask, torch.zeros_like(ids)), str(dest),
                          input_names=list(_INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes={**{name: axes for name in _INPUTS}, "last_hidden_state": axes},
                          opset_version=17, dynamo=False)
