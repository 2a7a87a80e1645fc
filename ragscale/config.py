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

    Spinning threads burn the time slice the other thread needs whenever the CPU is shared: an
    app on a presenter's laptop or a team server, a precompute beside other jobs. Measured on the
    2-core reference machine (2026-11-28, load ~4.5, `bench explorer-live`, arithmetic view):
    1.8-2.1 s passive against 11-15 s spinning; indexing at load ~3: 68.9 against 50.3
    passages/s. On an idle machine spinning is faster (decode 48 against 30 tokens/s), which is
    why the engine benchmarks keep OpenMP's default.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
