"""rag: local, citation-first question answering over news articles."""

import os as _os

__version__ = "0.1.0"

# Offline always: set before any Hugging Face library can be imported by anything in rag.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    _os.environ.setdefault(_name, "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # stderr carries only our messages
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
