"""Which FAISS index holds the vectors: exact up to a size, approximate (IVF-SQ8) above it.

Up to `threshold` vectors (100,000 by default; the RAG_ANN_THRESHOLD variable changes it) the
vectors stay in the exact index rag always had, `IndexIDMap2(IndexFlatIP)`, searched as before:
results are exactly today's. When an add takes the count past the threshold, the vectors move to
an inverted file with 8-bit scalar quantisation, `IndexIVFScalarQuantizer(IndexFlatIP quantizer,
nlist, QT_8bit_uniform, inner product, by_residual=False)`, keyed by the chunk ids themselves (IVF
keeps ids in its lists; an IDMap over IVF cannot remove) with a hashtable direct map, so that
`reconstruct(id)` (the chunk's vector, for duplicate collapse) and `remove_ids` (update and
delete) keep working. The manifest records the type and parameters (`describe`).

Why (bench row 6 and its parts `ann-build`/`ann-search`: 1M vectors shaped like MiniLM news
chunks with the 100 real sample chunks mixed in, 235 real gold questions, one search thread):
IVF-SQ8 reaches recall@10 0.969 against exact search at about 6 ms of CPU a query in 480 MB of
process RSS. Measured and not taken: IVF-PQ48 stops near 0.40 recall whatever nprobe (PQ error; a
float re-ranking copy would cost the memory back); IVF-SQfp16 gains ~0.005 recall for twice the
memory (~770 MB of codes); residual SQ8 gives the same recall with slower scans; per-dimension
8-bit ranges (QT_8bit) gain 0.006 recall for 60% more CPU (9.6 vs 5.9 ms); 2048 or 4096 lists
give the same recall per CPU-ms as 1024 for 2-4x the build time; HNSW cannot remove vectors in
FAISS (remove_ids raises), and rag removes by id on every update.

Data shapes: vectors float32 (n, d), L2-normalised; ids int64 (n,) = SQLite `chunks.id`.

- nlist: a power of two near sqrt(n) when trained (256 at 100k, 1024 at 1M), with at least 64
  vectors a list; k-means on 48 sampled vectors a list, 10 iterations.
- Retraining: when the ideal nlist is 4x the trained one (8-16x the vectors), the centroids are
  trained again and every vector moves to its new list. The 8-bit range is kept, and codes are not
  residuals, so decode -> encode gives back the same codes: moving loses nothing. The range is
  learnt at the switch over every dimension of the sample, widened by 5% each side, so later
  vectors are rarely clipped (1M: recall 0.969 with 5%, 0.965 with 20%).
- Shrinking below half the threshold goes back to the exact index (of the decoded vectors).
- nprobe: nlist / 5 (204 at 1M; nlist/8 gave recall 0.946, nlist/4 0.971 for 23% more time). A
  filter keeping at most EXACT_FILTER chunks (a few articles) is searched exactly among them; a
  wider one probes ntotal/n_allowed times more lists (up to all), so that it scans about as many
  allowed vectors as an unfiltered search scans vectors: a filter that drops the query's whole
  topic still finds the allowed top 10 (capping the widening at 2x gave recall 0.80 on such a
  filter in tests/test_vector_index.py). At 1M a 10% filter costs one full scan, ~28 ms CPU.

Left out on purpose: PQ (recall), HNSW (no removal), GPU, memory-mapped reading (the file store
reads the index whole), and any pickled state: everything lives in the FAISS file and the manifest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

FLAT = "flat"
IVF_SQ8 = "ivf-sq8"
DEFAULT_THRESHOLD = 100_000  # exact up to this many vectors (RAG_ANN_THRESHOLD)
MIN_LISTS = 16
POINTS_PER_LIST = 64  # at least this many vectors per list (fewer lists for small indexes)
TRAIN_PER_LIST = 48  # k-means training sample per list (faiss asks for at least 39)
KMEANS_ITERATIONS = 10
SQ_TYPE = "QT_8bit_uniform"  # one 8-bit range for every dimension (QT_8bit: one per dimension)
SQ_RANGE_MARGIN = 0.05  # the 8-bit range: training min/max widened by 5% of the span each side
PROBE_FRACTION = 5  # nprobe = nlist // PROBE_FRACTION
MIN_PROBES = 8  # small indexes (tests, low thresholds): scanning is cheap, recall is not
EXACT_FILTER = 4096  # filters keeping at most this many chunks: exact among them
FILTER_WIDEN = None  # cap on how many times nprobe a filtered search probes (None: up to nlist)
MOVE_BLOCK = 65_536  # vectors decoded at a time while switching or retraining


def _faiss():
    import faiss  # lazy, as in rag.store

    return faiss


@dataclass(frozen=True)
class Policy:
    threshold: int = DEFAULT_THRESHOLD

    @classmethod
    def from_env(cls) -> Policy:
        raw = os.environ.get("RAG_ANN_THRESHOLD", "").strip()
        try:
            return cls(threshold=max(1, int(raw))) if raw else cls()
        except ValueError:
            return cls()


def new_exact(dim: int):
    """The exact index rag has always written."""
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def kind(index) -> str:
    return IVF_SQ8 if isinstance(index, _faiss().IndexIVF) else FLAT


def ideal_nlist(n: int) -> int:
    """A power of two near sqrt(n), with at least POINTS_PER_LIST vectors a list; at least 16."""
    near = 2 ** round(math.log2(math.sqrt(max(n, 1))))
    return max(MIN_LISTS, min(near, 2 ** int(math.log2(max(n // POINTS_PER_LIST, 1)))))


def nprobe_for(nlist: int) -> int:
    return min(nlist, max(MIN_PROBES, nlist // PROBE_FRACTION))


def describe(index, policy: Policy | None = None) -> dict:
    """The manifest's `vector_index` record: the type and its parameters."""
    policy = policy or Policy.from_env()
    if kind(index) == FLAT:
        return {"type": FLAT, "threshold": policy.threshold}
    return {"type": IVF_SQ8, "threshold": policy.threshold, "nlist": int(index.nlist),
            "nprobe": int(index.nprobe), "quantizer": "flat-ip", "codes": _codes(index), "by_residual": False,
            "direct_map": "hashtable"}


def _codes(index) -> str:
    faiss = _faiss()
    return {faiss.ScalarQuantizer.QT_8bit: "sq8", faiss.ScalarQuantizer.QT_8bit_uniform: "sq8-uniform"}.get(
        int(index.sq.qtype), str(int(index.sq.qtype)))


def summary(record: dict | None) -> str:
    """One line for `rag status`: the type and its parameters (no record: an exact index)."""
    record = record or {"type": FLAT}
    if record.get("type") == FLAT:
        return "flat (exact)"
    return f"{record.get('type')} (approximate; nlist {record.get('nlist')}, nprobe {record.get('nprobe')})"


def maintain(index, policy: Policy | None = None):
    """The index to keep after a change: switched, retrained or switched back as the policy says."""
    policy = policy or Policy.from_env()
    n = int(index.ntotal)
    if kind(index) == FLAT:
        return to_ivf(index) if n > policy.threshold else index
    if n < policy.threshold // 2:
        return to_flat(index)
    if ideal_nlist(n) >= 4 * index.nlist:
        return to_ivf(index)  # grown 8x-16x since the centroids were trained
    return index


# --- reading every vector of an index, a block at a time ------------------------------------------


def _blocks(index):
    """(vectors float32 (m, d), ids int64 (m,)) blocks covering the whole index."""
    faiss = _faiss()
    if kind(index) == FLAT:
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        for start in range(0, len(ids), MOVE_BLOCK):
            stop = min(start + MOVE_BLOCK, len(ids))
            yield index.index.reconstruct_n(start, stop - start), ids[start:stop]
        return
    invlists = index.invlists
    vecs, ids, held = [], [], 0
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if not size:
            continue
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * index.code_size)
        vecs.append(index.sq.decode(codes.reshape(size, index.code_size).copy()))
        ids.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).astype(np.int64))
        held += size
        if held >= MOVE_BLOCK:
            yield np.concatenate(vecs), np.concatenate(ids)
            vecs, ids, held = [], [], 0
    if held:
        yield np.concatenate(vecs), np.concatenate(ids)


def _sample(index, count: int, seed: int = 1234) -> np.ndarray:
    """`count` vectors drawn evenly from the whole index (all of them if it holds fewer)."""
    n = int(index.ntotal)
    rng = np.random.default_rng(seed)
    keep_fraction = min(1.0, count / max(n, 1))
    parts = [v[rng.random(len(v)) < keep_fraction] for v, _ in _blocks(index)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def train_ivf(train: np.ndarray, nlist: int, sq_trained: np.ndarray | None = None, qtype: int | None = None):
    """An empty IVF-SQ8 index with centroids trained on `train` (and the 8-bit ranges, unless
    `sq_trained` gives them, with the `qtype` they were trained for)."""
    faiss = _faiss()
    d = train.shape[1]
    quantizer = faiss.IndexFlatIP(d)
    qtype = getattr(faiss.ScalarQuantizer, SQ_TYPE) if qtype is None else qtype
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, faiss.METRIC_INNER_PRODUCT, False)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.max_points_per_centroid = TRAIN_PER_LIST
    index.cp.seed = 1234
    # The 8-bit range is learnt once, at the switch, and kept (see the module docstring).
    index.sq.rangestat_arg = SQ_RANGE_MARGIN
    if sq_trained is None:
        index.train(train)
    else:  # keep the codes' ranges: re-encoding a decoded vector gives back its code
        clustering = faiss.Clustering(d, nlist, index.cp)
        clustering.train(train, quantizer)
        faiss.copy_array_to_vector(np.asarray(sq_trained, dtype=np.float32), index.sq.trained)
        index.is_trained = True
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.nprobe = nprobe_for(nlist)
    return index


def to_ivf(index):
    """A new IVF-SQ8 index holding every vector of `index` (exact or IVF) under the same ids."""
    faiss = _faiss()
    n = int(index.ntotal)
    nlist = ideal_nlist(n)
    retrain = kind(index) == IVF_SQ8  # keep its 8-bit ranges and type
    sq_trained = faiss.vector_to_array(index.sq.trained) if retrain else None
    qtype = int(index.sq.qtype) if retrain else None
    new = train_ivf(_sample(index, nlist * TRAIN_PER_LIST), nlist, sq_trained, qtype)
    for vectors, ids in _blocks(index):
        new.add_with_ids(vectors, ids)
    return new


def to_flat(index):
    """The exact index of the (decoded) vectors of an IVF index, under the same ids."""
    new = new_exact(index.d)
    for vectors, ids in _blocks(index):
        new.add_with_ids(vectors, ids)
    return new


# --- searching --------------------------------------------------------------------------------------


def search(index, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None,
           widen: int | None = FILTER_WIDEN) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of one query (float32 (d,)) over the whole index or only the `allowed` ids.

    Exact index: today's search. IVF: nprobe lists; a filter that keeps at most EXACT_FILTER
    chunks is searched exactly among them (their vectors decoded); a wider one probes more lists,
    so that about as many allowed vectors are scanned (at most `widen` times more, if given).
    """
    faiss = _faiss()
    k = min(k, int(index.ntotal))
    query = np.ascontiguousarray(qvec, dtype=np.float32).reshape(1, -1)
    if kind(index) == FLAT:
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)) if allowed is not None else None
        scores, ids = index.search(query, k, params=params)
        return scores[0], ids[0]
    if allowed is not None and len(allowed) <= EXACT_FILTER:
        return _exact_among(index, query[0], k, allowed)
    params = faiss.SearchParametersIVF(nprobe=filtered_nprobe(
        int(index.nprobe), int(index.nlist), int(index.ntotal), None if allowed is None else len(allowed),
        widen))
    if allowed is not None:
        bits = np.zeros(int(max(allowed.max(), 0)) + 1, dtype=bool)
        bits[allowed] = True
        packed = np.packbits(bits, bitorder="little")  # kept alive until the search returns
        selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))  # size in bytes
        params.sel = selector
    scores, ids = index.search(query, k, params=params)
    return scores[0], ids[0]


def _exact_among(index, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top k of the allowed ids by their decoded vectors (an id without a vector is skipped)."""
    allowed = np.ascontiguousarray(allowed, dtype=np.int64)
    try:
        vectors = index.reconstruct_batch(allowed)
    except RuntimeError:  # not expected (every chunk has a vector); one at a time, skipping the missing
        rows = {}
        for i in allowed.tolist():
            try:
                rows[i] = index.reconstruct(i)
            except RuntimeError:
                continue
        allowed = np.asarray(list(rows), dtype=np.int64)
        vectors = np.asarray(list(rows.values()), dtype=np.float32).reshape(len(rows), index.d)
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    out_s, out_i = np.full(k, -np.inf, dtype=np.float32), np.full(k, -1, dtype=np.int64)
    out_s[:len(order)], out_i[:len(order)] = scores[order], allowed[order]
    return out_s, out_i


def filtered_nprobe(nprobe: int, nlist: int, ntotal: int, n_allowed: int | None, widen: int | None = None) -> int:
    """Lists to probe for a filter keeping `n_allowed` of `ntotal`: nprobe * ntotal / n_allowed (as
    many allowed vectors scanned as an unfiltered search scans), at most `widen` times nprobe."""
    if n_allowed is None or n_allowed >= ntotal:
        return nprobe
    cap = nlist if widen is None else min(nlist, nprobe * widen)
    return min(cap, math.ceil(nprobe * ntotal / max(n_allowed, 1)))
