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


def prefer_passive_openmp() -> None:
    """Let torch's OpenMP threads sleep instead of spin while they wait (a user's own
    ``OMP_WAIT_POLICY`` wins). Read once when torch loads, so call it before anything imports torch.

    For index building, whose threads are fixed: spinning threads burn the time slice the other
    thread needs whenever the CPU is shared (indexing at load ~3: 68.9 against 50.3 passages/s).
    The embedded engine does not need it: it keeps OpenMP's brief spinning, which is faster on
    free cores (the Demo QA live view 9.6 s against 15 s sleeping), and drops to the threads that
    have a core when other processes are busy (``engines.spare_cores``).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
