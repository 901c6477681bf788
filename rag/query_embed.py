"""Fast embedding without torch: the same MiniLM, exported once to ONNX (fp32, and int8 for indexing).

`import sentence_transformers` costs about 5.6 s (torch, transformers, scikit-learn) in every
`rag ask` process; onnxruntime + tokenizers cost about 0.25 s. So `rag index`, which has torch
loaded anyway, exports the embedder's transformer to `<index>/embedder-<fingerprint>.onnx` (beside
the state folders, shared by all of them, named by the embedder it came from) and checks it against
sentence-transformers before keeping it. Queries and evidence sentences are then embedded with
onnxruntime, with sentence-transformers' own arithmetic: token vectors averaged over the attention
mask (mean pooling), then L2-normalised.

Indexing: a new index embeds its chunks through `embedder-<fingerprint>.int8.onnx`, the fp32 export
with onnxruntime's BERT fusions (one Attention op per layer) and dynamic int8 quantisation of the
weights (per output channel), which is about 3x faster than sentence-transformers on 2 cores. The
index records "precision": "int8" in its manifest's embedder identity, and `query_embedder` embeds
its queries through the same int8 file, so stored and query vectors always come from the same
arithmetic. An index whose manifest has no precision (built before int8) or "fp32" keeps fp32
query vectors. Measured on the gold questions: int8 vectors agree with fp32 to a mean cosine of
0.995 and the dense top-10 overlaps by 0.95-0.96; per-tensor weight scales (0.89), quantising the
word embeddings, or the first layer's FFN output (each about -0.01) cost more, so they are left out.

Left out on purpose: int8 for models other than Transformer + mean Pooling, GPU providers, and
CLS/max pooling or extra Dense layers: such embedders keep sentence-transformers at fp32.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.embed import (  # noqa: F401
    Embedder,
    SentenceTransformerEmbedder,
    embedder_identity,
    supports_onnx,
)

BATCH = 32  # fp32: texts per onnxruntime call, after sorting by length so little padding is computed
INT8_BATCH = 1  # int8: one text per call. Its activations are scaled per call, so in a batch a text's vector
# depends on its neighbours (cosine 0.993-0.995 with itself): a chunk's on how the corpus was split into runs,
# a sentence's on the questions asked before it. One per call costs no more: 239 chunks 10.2 s vs 13.9 s at 16,
# 300 sentences 1.6 s either way.
CACHE = 4096  # vectors kept per process: chat turns see many of the same evidence sentences again
MIN_COSINE = 0.9999  # an fp32 export must agree this well with sentence-transformers to be kept
MIN_COSINE_INT8 = 0.98  # the int8 export must agree this well with the fp32 one (measured: 0.988-0.999)
_PROBES = ["What did the council decide about the harbour?", "Ünïcødé, numbers 1,234.5 and 日本語",
           "short", "A longer sentence about the storm that closed the port for more than 40 hours. " * 8]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_path(index_dir: str | Path, identity: dict) -> Path:
    """Where the ONNX export of the embedder with this identity (and precision) lives in an index folder."""
    suffix = ".int8" if identity.get("precision") == "int8" else ""
    return Path(index_dir) / f"embedder-{identity['fingerprint']}{suffix}.onnx"


class OnnxEmbedder:
    """MiniLM through onnxruntime + tokenizers; vectors match SentenceTransformerEmbedder's."""

    def __init__(self, model_dir: Path, onnx_file: Path, threads: int | None = None,
                 batch: int | None = None, cache: bool = True):
        import onnxruntime
        from tokenizers import Tokenizer

        from rag.llm import default_threads

        self.identity = embedder_identity(model_dir, "int8" if onnx_file.name.endswith(".int8.onnx") else "fp32")
        self.onnx_file = onnx_file
        self.batch = batch or (INT8_BATCH if self.identity["precision"] == "int8" else BATCH)
        self.cache = cache
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
        """(len(texts), dim) float32, unit length, in the original order; fp32 batches texts of
        similar lengths, int8 embeds one per call (INT8_BATCH)."""
        out = np.zeros((len(texts), self.identity["dim"]), dtype=np.float32)
        todo = sorted({t for t in texts if t not in self._cache})
        if len(self._cache) + len(todo) > CACHE or not self.cache:  # full: start over, with this call's texts
            self._cache.clear()
            todo = sorted(set(texts))
        encodings = self._tok.encode_batch(todo)
        order = sorted(range(len(todo)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            for i, vector in zip(rows, self._embed_batch([encodings[i] for i in rows]), strict=True):
                self._cache[todo[i]] = vector
        for row, text in enumerate(texts):
            out[row] = self._cache[text]
        if not self.cache:
            self._cache.clear()
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


def index_precision(index_dir: str | Path) -> str | None:
    """The precision the published index in `index_dir` was built with: "fp32" for a manifest from
    before int8 (no key); None when the folder holds no readable manifest (a Milvus store's local
    folder, or no index yet)."""
    try:
        state = (Path(index_dir) / "CURRENT").read_text(encoding="utf-8").strip()
        embedder = json.loads((Path(index_dir) / state / "manifest.json").read_text(encoding="utf-8"))["embedder"]
        return str(embedder.get("precision", "fp32"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def query_embedder(index_dir: str | Path, model_dir: Path, precision: str | None = None) -> Embedder:
    """The embedder whose vectors match the index's: its ONNX export at the index's precision.

    int8 index: the int8 export (made again from the model if it is missing, which needs torch once).
    fp32 index: the fp32 export, else sentence-transformers. Without a manifest in the folder (a
    Milvus store keeps only its exports here) the int8 export is used when it is there, as `rag
    index` made it for that store; a caller that knows the store's precision passes it, and a missing
    int8 export is then made here (a client of a shared store, on its first question). If nothing
    fits, sentence-transformers at fp32, whose identity says fp32 so that the store can refuse it.
    """
    precision = precision or index_precision(index_dir)
    if precision is None:  # no index here: an export left by `rag index`, else nothing to make
        precision = "int8" if onnx_path(index_dir, embedder_identity(model_dir, "int8")).is_file() else "fp32"
    path = onnx_path(index_dir, embedder_identity(model_dir, precision))
    if precision == "int8" and not path.is_file() and supports_onnx(model_dir):
        # First question on this machine (a client of a shared store): make the export once, here.
        Path(index_dir).mkdir(parents=True, exist_ok=True)
        ensure_onnx(index_dir, SentenceTransformerEmbedder(model_dir))
    if path.is_file():
        try:
            return OnnxEmbedder(model_dir, path)
        except Exception:  # a damaged export: the slow path still gives fp32 vectors
            pass
    return SentenceTransformerEmbedder(model_dir)


def index_embedder(index_dir: str | Path, embedder: Embedder, identity: dict) -> Embedder:
    """What `rag index` embeds chunks with so that they get `identity` (the manifest's embedder).

    The sentence-transformers embedder stands for the real model: for an int8 identity the chunks
    go through the int8 export in `index_dir` (made now if missing), one session per process. Any
    other embedder (fakes in tests, fp32) is used as it is.
    """
    if not isinstance(embedder, SentenceTransformerEmbedder) or identity.get("precision") != "int8":
        return embedder
    path = onnx_path(index_dir, identity)
    if not path.is_file():
        why = ensure_onnx(index_dir, embedder)
        if why or not path.is_file():
            from rag.errors import RagError

            raise RagError(f"cannot make the int8 embedder in {index_dir} ({why or 'no export'})",
                           "check that the folder is writable and onnxruntime/onnx are installed")
    return _index_session(str(embedder.model_dir), str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _index_session(model_dir: str, path: str, stamp: int) -> OnnxEmbedder:
    return OnnxEmbedder(Path(model_dir), Path(path), cache=False)


def ensure_onnx(index_dir: str | Path, embedder: SentenceTransformerEmbedder) -> str | None:
    """Export the embedder to the index folder unless already there; returns why not, or None.

    Makes the fp32 export (checked against sentence-transformers) and, when the model's default
    precision is int8, the int8 export made from it (checked against the fp32 one). Called by `rag
    index`, where torch is already loaded. Older exports (other fingerprints) are removed.
    """
    model_dir = embedder.model_dir
    fp32 = embedder_identity(model_dir, "fp32")
    int8 = embedder_identity(model_dir, "int8")
    dest, dest8 = onnx_path(index_dir, fp32), onnx_path(index_dir, int8)
    want8 = int8["precision"] == embedder_identity(model_dir)["precision"]
    if dest.is_file() and (dest8.is_file() or not want8):
        return None
    if not supports_onnx(model_dir):
        return "its modules are not Transformer + mean Pooling"
    tmp, tmp8 = dest.with_name(dest.name + ".tmp"), dest8.with_name(dest8.name.replace(".int8.", ".tmp.int8."))
    try:
        if not dest.is_file():
            export_onnx(model_dir, tmp)
            fast = OnnxEmbedder(model_dir, tmp).embed(_PROBES)
            cosine = float(np.min(np.sum(fast * embedder.embed(_PROBES), axis=1)))
            if cosine < MIN_COSINE:
                return f"the export disagrees with sentence-transformers (cosine {cosine:.5f})"
            os.replace(tmp, dest)
        if want8 and not dest8.is_file():
            int8_export(model_dir, dest, tmp8)
            quick = OnnxEmbedder(model_dir, tmp8).embed(_PROBES)
            cosine = float(np.min(np.sum(quick * OnnxEmbedder(model_dir, dest).embed(_PROBES), axis=1)))
            if cosine < MIN_COSINE_INT8:
                return f"the int8 export disagrees with the fp32 one (cosine {cosine:.4f})"
            os.replace(tmp8, dest8)
    except Exception as e:  # any failure just means queries take the slow path
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    finally:
        tmp.unlink(missing_ok=True)
        tmp8.unlink(missing_ok=True)
    for old in Path(index_dir).glob("embedder-*.onnx"):
        if old not in (dest, dest8):
            old.unlink(missing_ok=True)
    return None


def int8_export(model_dir: Path, fp32_file: Path, dest: Path) -> None:
    """The fp32 export with onnxruntime's BERT fusions, its weights quantised to int8 per channel.

    Left at fp32: the word embeddings (Gather) and the first layer's FFN output, the two places where
    int8 cost most agreement for least speed. Activations are quantised per call (dynamic).
    Weights use 7 bits (`reduce_range`): with full 8-bit weights, CPUs without VNNI (AVX2 only)
    saturate onnxruntime's intermediate sums, so one index gave other vectors, and other answers,
    on another machine. With 7 bits the integer arithmetic is exact on every x86 CPU.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = json.loads((model_dir / "config.json").read_text())
    source, fused = fp32_file, dest.with_name(dest.name + ".fused")
    root = logging.getLogger()
    saved = root.level, root.handlers[:]  # onnxruntime's tools configure the root logger: undone below
    root.setLevel(logging.ERROR)  # their "consider pre-processing" warnings
    try:
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = optimize_model(str(fp32_file), model_type="bert", opt_level=1,
                                       num_heads=config.get("num_attention_heads", 0),
                                       hidden_size=config.get("hidden_size", 0))
                model.save_model_to_file(str(fused))
            source = fused
        except Exception:  # no fusions: the plain graph quantises too, only a little slower
            source = fp32_file
        graph = onnx.load(str(source), load_external_data=False).graph
        keep = [n.name for n in graph.node if n.op_type == "MatMul" and "layer.0/output/dense" in n.name]
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        fused.unlink(missing_ok=True)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


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
