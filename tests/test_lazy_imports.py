"""Cheap commands stay cheap: heavy libraries are imported only by the commands that use them.

`import sentence_transformers` alone costs about 5.6 s here; torch, faiss and llama_cpp are
the other big ones. Each check runs the real CLI in a fresh interpreter and lists which heavy
modules ended up in sys.modules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FORMAT_LIBRARIES = ("trafilatura", "htmldate", "feedparser", "pypdf", "warcio", "dateparser", "lxml")
HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "faiss", "llama_cpp", "onnxruntime",
         "bm25s", "scipy", *FORMAT_LIBRARIES)
_RUN = """
import json, os, sys
from rag.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = os.environ["HEAVY"].split()
with open(os.environ["LOADED_OUT"], "w") as f:
    json.dump({"code": code, "loaded": [m for m in heavy if m in sys.modules]}, f)
"""


def heavy_imports(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    """(exit code, heavy modules imported) of `rag ARGV` in a fresh interpreter."""
    out = cwd / "loaded.json"
    env = {**os.environ, "LOADED_OUT": str(out), "HEAVY": " ".join(HEAVY)}
    env = {k: v for k, v in env.items() if not k.startswith("RAG_")}
    subprocess.run([sys.executable, "-c", _RUN, *argv], cwd=cwd, env=env, capture_output=True, timeout=120,
                   check=False)
    result = json.loads(out.read_text())
    return result["code"], set(result["loaded"])


def test_help_imports_nothing_heavy(tmp_path):
    code, loaded = heavy_imports(["--help"], tmp_path)
    assert code == 0 and not loaded, loaded
    code, loaded = heavy_imports(["ask", "--help"], tmp_path)
    assert code == 0 and not loaded, loaded


def test_status_of_a_missing_index_imports_nothing_heavy(tmp_path):
    code, loaded = heavy_imports(["status", "--index", str(tmp_path / "nothing")], tmp_path)
    assert code == 1 and not loaded, loaded


@pytest.mark.slow
def test_status_imports_no_torch_faiss_or_llama(sample_index, tmp_path):
    code, loaded = heavy_imports(["status", "--index", str(sample_index)], tmp_path)
    assert code == 0
    assert not loaded & {"torch", "transformers", "sentence_transformers", "faiss", "llama_cpp"}, loaded


@pytest.fixture(scope="module")
def index_with_export(tmp_path_factory, sample_index, real_embedder) -> Path:
    from rag.query_embed import ensure_onnx, onnx_path

    folder = tmp_path_factory.getbasetemp() / "onnx-export"  # shared with test_query_embed
    folder.mkdir(exist_ok=True)
    assert ensure_onnx(folder, real_embedder) is None
    exported = onnx_path(folder, real_embedder.identity)
    index = tmp_path_factory.mktemp("lazy") / "index"
    shutil.copytree(sample_index, index)
    try:
        (index / exported.name).hardlink_to(exported)
    except OSError:
        shutil.copyfile(exported, index / exported.name)
    return index


@pytest.mark.slow
def test_extractive_ask_imports_no_torch_when_the_export_exists(index_with_export, tmp_path):
    code, loaded = heavy_imports(["ask", "--mode", "extractive", "--index", str(index_with_export),
                                  "What did the US urge Pakistan to do?"], tmp_path)
    assert code in (0, 3)
    assert not loaded & {"torch", "transformers", "sentence_transformers", "sklearn", "llama_cpp"}, loaded
    assert not loaded & set(FORMAT_LIBRARIES), loaded  # article readers belong to `rag index` alone
    assert not loaded & {"bm25s", "scipy"}, loaded  # the saved BM25 arrays and stopwords need neither
    assert "onnxruntime" in loaded


def test_lexical_scores_without_bm25s_equal_bm25s(tmp_path):
    """The persisted BM25 matrix, scored with numpy, gives bm25s's own scores (no pickle on disk)."""
    import bm25s
    import numpy as np

    from rag.config import Settings
    from rag.embed import FakeEmbedder
    from rag.indexer import index_paths
    from rag.lexical import LEXICAL_DIR, Lexical
    from rag.store import open_index

    root = Path(__file__).resolve().parent.parent
    index = tmp_path / "index"
    index_paths([str(root / "eval" / "corpus")], Settings(index=str(index)), embedder=FakeEmbedder(),
                counter=_WordCounter())
    reader = open_index(index)
    folder = reader.path / LEXICAL_DIR
    try:
        lexical = Lexical.load(folder, reader.manifest["counts"]["chunks"])
        assert lexical is not None
        reference = bm25s.BM25.load(str(folder), allow_pickle=False)
        questions = [json.loads(line)["question"] for line in (root / "eval" / "gold.jsonl").read_text().splitlines()
                     if line.strip()] + ["the the", "", "!!!", "Pakistan pakistan PAKISTAN", "zzzunknown"]
        for q in questions:
            words = [w for w in bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]
                     if w in reference.vocab_dict and w]
            mine = lexical.scores(q)
            if not words:
                assert mine is None, q
            else:
                assert np.allclose(mine, reference.get_scores(words)), q
    finally:
        reader.close()
    assert not [p for p in folder.iterdir() if p.suffix not in (".npy", ".json")]


class _WordCounter:
    """A TokenCounter stand-in (one token per word) so this test loads no tokenizer files."""

    def count(self, texts):
        return [len(t.split()) for t in texts]

    def offsets(self, text):
        import re

        return [m.span() for m in re.finditer(r"\S+", text)]
