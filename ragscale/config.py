"""Paths and process-wide defaults.

Everything runs offline: model hubs are unreachable on the machines we target, so the
Hugging Face libraries are told so before any of them is imported, and chromadb's telemetry
is off. Users can still override each variable in their environment.
"""

from __future__ import annotations

import os
from pathlib import Path

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Shipped data: the paper's reference table, demo results, precomputed trees.
DATA_DIR = Path(os.environ.get("RAGSCALE_DATA_DIR", PROJECT_ROOT / "data"))
# The real HotpotQA / MuSiQue samples live beside the project (never copied into it).
SHARED_DATASETS_DIR = Path(os.environ.get("RAGSCALE_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


def cache_dir() -> Path:
    """Where derived artefacts live: the bf16 model copy, chroma indexes, demonstration chains.

    ``RAGSCALE_CACHE_DIR`` wins; otherwise the platform's user cache directory.
    """
    override = os.environ.get("RAGSCALE_CACHE_DIR")
    if override:
        path = Path(override)
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("ragscale"))
    path.mkdir(parents=True, exist_ok=True)
    return path
