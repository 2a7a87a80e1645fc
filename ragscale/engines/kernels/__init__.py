"""ragscale's CPU kernels for the embedded engine's decode step, compiled where they run.

Four ops, ``torch.ops.ragscale.decode_attention``, ``rms_norm``, ``silu_mul`` and ``rope_store``,
built from
this folder's C++ (``g++ -O3 -march=native``, ~15 s, once per source, torch version and
compiler) against torch's headers and its OpenMP runtime:

- ``decode_attention`` (``decode_attention.cpp``): one new token per row, its KV head's query
  group against one part of the row's keys. Every (row, KV head, 512-key chunk) is a work item
  and the chunks merge in a fixed order. torch's fused CPU kernel gives this shape one work item
  per KV head (3 for SmolLM2, on 2 threads) and small GEMM calls per key block. With
  ``accumulate`` a call continues the softmax an earlier call began (the cascade's shared prefix,
  then the row's own keys), so the decode step needs no merge ops.
- ``rms_norm`` (``rms_norm.cpp``): transformers' RMSNorm of decode rows in one call instead of
  nine torch ops (61 norms a token).
- ``silu_mul`` (``gated_mlp.cpp``): the gated MLP's silu(gate) * up in one call (torch's bf16
  silu alone took ~8 us a layer).
- ``rope_store`` (``rope_store.cpp``): RoPE on q | k and the new token's k | v written into its
  row's KV buffer, in one call instead of ~10 (same bits as torch's ops).

Why our own: no maintained library ships such kernels for torch 2.13 on CPU
(intel-extension-for-pytorch stopped at torch 2.8; llama.cpp's are inside its own engine).
Measured side by side: ``ragscale bench decode-kernels`` (README).

**torch's ops** serve instead (``decode_step.rms_norm`` and torch's fused attention kernel behind
the same signature, ``torch_decode_attention``): where no compiler is found or the build fails,
for a head size the kernel is not built for, or on request (``RAGSCALE_KERNELS=torch``: the bits
the engine gave before these kernels, and what the bundled search stores were computed with).

Each build computes every row alone and in a fixed order, so a row's bits depend neither on the
other rows of the call nor on the thread count; the two builds differ from each other in the
last bits. The built module lives under the virtual environment (``sys.prefix``): the same trust
as the packages installed there, never a shared or downloaded cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FOLDER = Path(__file__).parent
SOURCES = sorted(FOLDER.glob("*.cpp"))
BACKENDS = ("ragscale", "torch")
ATTENTION = ("decode_attention(Tensor q, Tensor kv, float scale, Tensor(a!) out, Tensor(b!) lse, int first, "
             "int rows, bool accumulate) -> ()")
NORM = "rms_norm(Tensor x, Tensor weight, float eps) -> Tensor"
SILU_MUL = "silu_mul(Tensor gate_up) -> Tensor"
ROPE_STORE = ("rope_store(Tensor(a!) qkv, Tensor cos, Tensor signed_sin, int heads, int kv_heads, Tensor(b!) kv, "
              "int[] rows, int[] positions) -> ()")
FAILED = "FAILED"  # a failed build's one-line reason, next to where the build would be
HEAD_DIMS = (16, 32, 64, 80, 96, 128, 256)  # the head sizes the attention kernel is instantiated for

_lock = threading.Lock()
_state: dict = {}  # "built": the kernels loaded (bool), "why": if not; "library" keeps torch's ops alive


def requested_backend() -> str:
    """``RAGSCALE_KERNELS`` (``ragscale`` or ``torch``); default ``ragscale``."""
    chosen = os.environ.get("RAGSCALE_KERNELS") or "ragscale"
    if chosen not in BACKENDS:
        from ragscale.errors import EngineError

        raise EngineError(f"RAGSCALE_KERNELS must be one of {', '.join(BACKENDS)}; got {chosen!r}")
    return chosen


def compile_command(output: Path) -> list[str]:
    """The compiler call that builds ``SOURCES`` into ``output`` against this torch. It links
    torch's own OpenMP runtime (``libgomp.so.1`` next to libtorch), so the kernels' threads are
    torch's: ``torch.set_num_threads`` governs them."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or "g++"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    root = Path(torch.__file__).parent  # (torch.utils.cpp_extension gives the same paths, importing setuptools)
    lib, include = root / "lib", root / "include"
    return [compiler, "-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-fopenmp", "-w",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{include}", f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
            *map(str, SOURCES), "-o", str(output), f"-L{lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}"]


def built_path() -> Path:
    """Where this source, torch and machine's build lives (a new source or torch: a new path)."""
    sources = [p.read_bytes() for p in sorted(FOLDER.glob("*.cpp")) + sorted(FOLDER.glob("*.h"))]
    key = hashlib.sha256(b"\0".join([*sources, torch.__version__.encode(), platform.machine().encode(),
                                     " ".join(compile_command(Path("out.so"))).encode()])).hexdigest()[:16]
    return Path(sys.prefix) / "share" / "ragscale-kernels" / key / "ragscale_kernels.so"


def build(retry: bool = False) -> Path:
    """Compile the kernels unless this build exists; the file appears whole or not at all. A
    failed build is remembered next to it (``FAILED``), so later starts fall back at once instead
    of compiling again; ``retry`` (``python -m ragscale.engines.kernels``) tries anyway."""
    target = built_path()
    failed = target.with_name(FAILED)
    if target.exists():
        return target
    if failed.exists() and not retry:
        raise OSError(failed.read_text(errors="replace").strip() + " (retry: python -m ragscale.engines.kernels)")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("compiling ragscale's decode kernels (once per source and torch, ~15 s)")
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        try:
            done = subprocess.run(compile_command(partial), capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as error:  # no compiler at all
            failed.write_text(f"compiling the kernels failed: {error}")
            raise OSError(failed.read_text()) from error
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            failed.write_text(f"compiling the kernels failed: {lines[-1] if lines else done.returncode}")
            raise OSError(failed.read_text())
        os.replace(partial, target)
    failed.unlink(missing_ok=True)
    return target


def ensure() -> bool:
    """Put the ops in place, once per process: ``torch.ops.ragscale.decode_attention`` and
    ``rms_norm`` (the kernels; torch's ops under those names where they are not built, so that
    the decode step always compiles) and ``torch_decode_attention`` (torch's, always). True when
    the kernels loaded."""
    with _lock:
        if "built" in _state:
            return _state["built"]
        built, why = False, "RAGSCALE_KERNELS=torch"
        if requested_backend() == "ragscale":
            try:
                torch.ops.load_library(str(build()))
                built, why = True, ""
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                why = f"the kernels are unavailable: {error}"
                log.warning("decode runs on torch's ops: %s", why)
        # A fragment: the kernels' library (if loaded) already holds the namespace.
        library = torch.library.Library("ragscale", "FRAGMENT")
        library.define(ATTENTION.replace("decode_attention(", "torch_decode_attention(", 1))
        library.impl("torch_decode_attention", torch_decode_attention, "CPU")
        if not built:  # the names the decode step compiles against exist either way
            library.define(ATTENTION)
            library.impl("decode_attention", torch_decode_attention, "CPU")
            library.define(NORM)
            library.impl("rms_norm", torch_rms_norm, "CPU")
            library.define(SILU_MUL)
            library.impl("silu_mul", torch_silu_mul, "CPU")
            library.define(ROPE_STORE)
            library.impl("rope_store", torch_rope_store, "CPU")
        _state.update(built=built, why=why, library=library)
        return built


def choose(head_dim: int) -> tuple[str, str]:
    """(backend, why) for a model with ``head_dim``: "ragscale" where the kernels are loaded and
    the attention kernel is instantiated for that size, else "torch"."""
    if not ensure():
        return "torch", _state["why"]
    if head_dim not in HEAD_DIMS:
        return "torch", f"head size {head_dim} is not one the attention kernel is built for ({HEAD_DIMS})"
    return "ragscale", "compiled here, -march=native"


def torch_decode_attention(q: torch.Tensor, kv: torch.Tensor, scale: float, out: torch.Tensor, lse: torch.Tensor,
                           first: int, rows: int, accumulate: bool) -> None:
    """The attention op on torch's fused kernel, for rows ``first .. first + rows`` against ``kv``
    ([2, rows, kv_heads, n, dim], or [2, kv_heads, n, dim] shared by every row): this part's
    output and log-sum-exp, merged into ``out`` and ``lse`` as one softmax over both parts would
    weigh them when ``accumulate``."""
    q, out, lse = q[first:first + rows], out[first:first + rows], lse[first:first + rows]
    keys, values = kv[0], kv[1]
    if kv.dim() == 4:
        keys, values = keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)
    part, part_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, keys, values, scale=scale)
    if not accumulate:
        out.copy_(part)
        lse.copy_(part_lse)
        return
    top = torch.maximum(lse, part_lse)
    weight_old = (lse - top).exp_()
    weight_new = (part_lse - top).exp_()
    total = weight_old + weight_new
    out.mul_(weight_old.unsqueeze(-1)).add_(part.float().mul_(weight_new.unsqueeze(-1))).div_(total.unsqueeze(-1))
    lse.copy_(top.add_(total.log_()))


def torch_rope_store(qkv: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, heads: int, kv_heads: int,
                     kv: torch.Tensor, rows: list[int], positions: list[int]) -> None:
    """RoPE in place on q | k, then k | v written at each row's position (only where the kernels
    are not built)."""
    from ragscale.engines.decode_step import rope_in_place

    dim = cos.shape[-1]
    rope_in_place(qkv, cos, signed_sin, heads + kv_heads, dim)
    kv[:, torch.tensor(rows), :, torch.tensor(positions)] = qkv[:, heads * dim:].view(len(rows), 2, kv_heads, dim)


def torch_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up on torch's ops (only where the kernels are not built)."""
    half = gate_up.shape[-1] // 2
    return torch.nn.functional.silu(gate_up[:, :half]).mul_(gate_up[:, half:])


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The norm op on torch's ops (only where the kernels are not built; the decode step calls
    ``decode_step.rms_norm`` itself when it runs on torch's ops)."""
    from ragscale.engines.decode_step import rms_norm

    return rms_norm(x, weight, torch.tensor(1 / x.shape[-1]), torch.tensor(eps))
