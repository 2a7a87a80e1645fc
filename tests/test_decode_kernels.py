"""ragscale's decode kernels (``ragscale.engines.kernels``): attention against torch's fused kernel
and a float64 softmax, its bit promises (rows alone, any thread count), the cascade's
``accumulate``; the norm, the gated MLP's middle and RoPE + KV store against the torch ops they
replace; clear errors; the fall-backs (a failed build, ``RAGSCALE_KERNELS``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ragscale.engines import kernels
from ragscale.engines.decode_step import rms_norm, rope_in_place
from ragscale.errors import EngineError

KERNEL = kernels.ensure()
needs_kernel = pytest.mark.skipif(not KERNEL, reason="the kernel did not build here (see kernels.ensure)")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention in float64: output [rows, heads, group, dim] and log-sum-exp."""
    scores = torch.einsum("bhgd,bhld->bhgl", q.double(), k.double()) * scale
    lse = torch.logsumexp(scores, -1)
    return torch.einsum("bhgl,bhld->bhgd", torch.softmax(scores, -1), v.double()), lse


def run(op, q, k, v, scale, out=None, lse=None, accumulate=False, kv=None):
    """Every row of ``q`` against its own ``k``/``v`` (or ``kv`` as given)."""
    out = torch.empty(q.shape, dtype=torch.float32) if out is None else out
    lse = torch.empty(q.shape[:3], dtype=torch.float32) if lse is None else lse
    op(q, torch.stack([k, v]) if kv is None else kv, scale, out, lse, 0, q.shape[0], accumulate)
    return out, lse


def random_case(rows: int, keys: int, dim: int, dtype=torch.bfloat16, heads: int = 3, group: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: (torch.randn(*shape, generator=generator) * 2).to(dtype)  # noqa: E731
    return make(rows, heads, group, dim), make(rows, heads, keys, dim), make(rows, heads, keys, dim)


@needs_kernel
@pytest.mark.parametrize("keys", [1, 15, 255, 256, 257, 1017])
@pytest.mark.parametrize("dim,dtype", [(64, torch.bfloat16), (128, torch.bfloat16), (64, torch.float32),
                                       (80, torch.bfloat16)])
def test_the_kernel_is_softmax_attention(keys, dim, dtype):
    """Within float32 rounding of a float64 softmax, for lengths around the 256-key chunks and
    the padding of the last 16 keys; torch's kernel (bf16 output) is no closer."""
    q, k, v = random_case(2, keys, dim, dtype)
    scale = dim ** -0.5
    want, want_lse = reference(q, k, v, scale)
    out, lse = run(torch.ops.ragscale.decode_attention, q, k, v, scale)
    assert torch.allclose(out.double(), want, atol=2e-5, rtol=1e-4)
    assert torch.allclose(lse.double(), want_lse, atol=2e-5, rtol=1e-5)
    torch_out, _ = run(torch.ops.ragscale.torch_decode_attention, q, k, v, scale)
    assert (out.double() - want).abs().max() <= (torch_out.double() - want).abs().max() + 1e-6


@pytest.mark.parametrize("op", ["decode_attention", "torch_decode_attention"])
def test_accumulate_continues_the_softmax_over_a_second_part(op):
    """The cascade: a prefix's call, then the row's own keys with ``accumulate``, equals softmax
    over both parts (for the kernel and for torch's build behind the same signature)."""
    call = getattr(torch.ops.ragscale, op)
    q, k, v = random_case(3, 700, 64, torch.float32)
    want, want_lse = reference(q, k, v, 0.125)
    out, lse = run(call, q, k[:, :, :450], v[:, :, :450], 0.125)
    run(call, q, k[:, :, 450:], v[:, :, 450:], 0.125, out, lse, accumulate=True)
    assert torch.allclose(out.double(), want, atol=1e-5)
    assert torch.allclose(lse.double(), want_lse, atol=1e-5)


@needs_kernel
def test_a_row_gets_the_same_bits_alone_in_a_batch_and_at_any_thread_count():
    """What greedy outputs with the cache on and off, and n samples, rest on: a row's result does
    not depend on the other rows of the call, on an expanded (stride 0) prefix, or on threads."""
    q, k, v = random_case(4, 1017, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [run(torch.ops.ragscale.decode_attention, q[r:r + 1], k[r:r + 1], v[r:r + 1], 0.125) for r in range(4)]
        torch.set_num_threads(max(2, threads))
        together = run(torch.ops.ragscale.decode_attention, q, k, v, 0.125)
        shared = run(torch.ops.ragscale.decode_attention, q, None, None, 0.125, kv=torch.stack([k[0], v[0]]))
    finally:
        torch.set_num_threads(threads)
    for r in range(4):
        assert torch.equal(together[0][r:r + 1], alone[r][0]) and torch.equal(together[1][r:r + 1], alone[r][1])
    first_alone = run(torch.ops.ragscale.decode_attention, q[1:2], k[:1], v[:1], 0.125)
    assert torch.equal(shared[0][1:2], first_alone[0])
    # rows 1 and 2 only, the others untouched
    out, lse = torch.full((4, 3, 3, 64), 7.0), torch.full((4, 3, 3), 7.0)
    torch.ops.ragscale.decode_attention(q, torch.stack([k[1:3], v[1:3]]), 0.125, out, lse, 1, 2, False)
    assert torch.equal(out[1:3], together[0][1:3]) and torch.equal(lse[1:3], together[1][1:3])
    assert (out[0] == 7).all() and (out[3] == 7).all() and (lse[0] == 7).all()


@needs_kernel
def test_no_keys_leaves_an_empty_part_and_accumulating_nothing_changes_nothing():
    q, k, v = random_case(1, 5, 64)
    out, lse = run(torch.ops.ragscale.decode_attention, q, k[:, :, :0], v[:, :, :0], 0.125)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    before = run(torch.ops.ragscale.decode_attention, q, k, v, 0.125)
    after = run(torch.ops.ragscale.decode_attention, q, k[:, :, :0], v[:, :, :0], 0.125,
                before[0].clone(), before[1].clone(), accumulate=True)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


@needs_kernel
@pytest.mark.parametrize("change,message", [
    (lambda q, kv: (q, kv.half()), "bfloat16 or float32"),
    (lambda q, kv: (q, kv[:, :, :2]), "do not match"),
    (lambda q, kv: (q[..., :48], kv[..., :48]), "is not one of"),
    (lambda q, kv: (q, kv.transpose(3, 4).contiguous().transpose(3, 4)), "contiguous"),
    (lambda q, kv: (q, kv[:1]), "kv \\[2, "),
])
def test_bad_inputs_get_a_clear_error(change, message):
    q, k, v = random_case(2, 32, 64)
    out, lse = torch.empty(q.shape), torch.empty(q.shape[:3])
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.ragscale.decode_attention(q, torch.stack([k, v]), 0.125, out, lse, 1, 2, False)
    q, kv = change(q, torch.stack([k, v]))
    out, lse = torch.empty(q.shape), torch.empty(q.shape[:3])
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ragscale.decode_attention(q, kv, 0.125, out, lse, 0, 2, False)


def test_the_variable_chooses_torch_and_a_wrong_value_is_refused(monkeypatch):
    monkeypatch.setenv("RAGSCALE_KERNELS", "torch")
    assert kernels.requested_backend() == "torch"
    monkeypatch.setenv("RAGSCALE_KERNELS", "flash")
    with pytest.raises(EngineError, match="RAGSCALE_KERNELS"):
        kernels.requested_backend()


def test_a_head_size_the_kernel_lacks_runs_on_torch():
    backend, why = kernels.choose(72)
    assert backend == "torch" and ("72" in why or "unavailable" in why or "RAGSCALE_KERNELS" in why)


FALLBACK = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from ragscale.engines import kernels
kernels.build = lambda: (_ for _ in ()).throw(OSError("no compiler"))
print(kernels.ensure(), kernels.choose(64))
q = torch.randn(1, 3, 3, 64).bfloat16(); k = torch.randn(1, 3, 9, 64).bfloat16()
out, lse = torch.empty(1, 3, 3, 64), torch.empty(1, 3, 3)
torch.ops.ragscale.decode_attention(q, torch.stack([k, k]), 0.125, out, lse, 0, 1, False)
print(bool(torch.isfinite(out).all()))
"""


def test_a_failed_build_falls_back_to_torch_with_one_warning():
    """No compiler (or a failed build): the op still exists, on torch's kernel, so decode runs."""
    done = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAGSCALE_KERNELS": "ragscale"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("False ('torch'") and "no compiler" in lines[0]
    assert lines[1] == "True"
    assert "falls back" in done.stderr or "runs on torch" in done.stderr


@needs_kernel
def test_the_build_is_keyed_on_its_source_and_lives_in_the_environment():
    path = kernels.built_path()
    assert path.exists() and path.is_relative_to(sys.prefix)
    assert kernels.build() == path  # built once: a second call compiles nothing


def bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance between two bf16 tensors in units in the last place."""
    return int((a.view(torch.int16).int() - b.view(torch.int16).int()).abs().max())


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_norm_kernel_is_transformers_rmsnorm(dtype):
    """Within one rounding of the nine torch ops it replaces (the sum of squares adds in another
    order), for a width that is not a multiple of 16 too."""
    generator = torch.Generator().manual_seed(1)
    for width in (576, 100):
        x = (torch.randn(3, width, generator=generator) * 4).to(dtype)
        weight = torch.randn(width, generator=generator).to(dtype)
        ours = torch.ops.ragscale.rms_norm(x, weight, 1e-5)
        theirs = rms_norm(x, weight, torch.tensor(1 / width), torch.tensor(1e-5))
        if dtype == torch.bfloat16:
            assert bf16_ulps(ours, theirs) <= 1
        else:
            assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6)
        assert torch.equal(torch.ops.ragscale.rms_norm(x[1:2].clone(), weight, 1e-5), ours[1:2])  # rows alone


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_gated_mlp_kernel_is_silu_times_up(dtype):
    generator = torch.Generator().manual_seed(2)
    gate_up = (torch.randn(2, 2 * 1539, generator=generator) * 6).to(dtype)  # odd width: the scalar tail too
    ours = torch.ops.ragscale.silu_mul(gate_up)
    theirs = torch.nn.functional.silu(gate_up[:, :1539]).mul_(gate_up[:, 1539:])
    if dtype == torch.bfloat16:
        assert bf16_ulps(ours, theirs) <= 2  # two roundings, each of a value within ~1 float32 ulp
    else:
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rope_and_store_give_the_bits_of_torchs_ops(dtype):
    """RoPE on q | k in place and k | v written at each row's buffer row and position: the same
    bits as ``rope_in_place`` and an indexed write, nothing else in the buffer touched."""
    heads, kv_heads, dim, rows = 9, 3, 64, [2, 0]
    generator = torch.Generator().manual_seed(3)
    qkv = (torch.randn(2, (heads + 2 * kv_heads) * dim, generator=generator) * 3).to(dtype)
    cos = torch.randn(2, 1, dim, generator=generator).to(dtype)
    sin = torch.randn(2, 1, dim, generator=generator).to(dtype)
    kv = torch.randn(2, 3, kv_heads, 8, dim, generator=generator).to(dtype)
    want_qkv, want_kv = qkv.clone(), kv.clone()
    rope_in_place(want_qkv, cos, sin, heads + kv_heads, dim)
    want_kv[:, torch.tensor(rows), :, torch.tensor([5, 1])] = want_qkv[:, heads * dim:].view(2, 2, kv_heads, dim)
    torch.ops.ragscale.rope_store(qkv, cos, sin, heads, kv_heads, kv, rows, [5, 1])
    assert torch.equal(qkv, want_qkv) and torch.equal(kv, want_kv)
    with pytest.raises(RuntimeError, match="outside the buffer"):
        torch.ops.ragscale.rope_store(qkv, cos, sin, heads, kv_heads, kv, rows, [8, 1])


def test_a_failed_build_is_remembered_until_a_retry(tmp_path, monkeypatch):
    """A failed compile leaves its reason next to where the build would be: later starts fall
    back at once (no second compile), and ``retry`` (``python -m ragscale.engines.kernels``) compiles."""
    calls = []
    monkeypatch.setattr(kernels, "built_path", lambda: tmp_path / "key" / "ragscale_kernels.so")

    def failing(output):
        calls.append(output)
        return [sys.executable, "-c", "import sys; sys.exit('error: no such compiler')"]

    monkeypatch.setattr(kernels, "compile_command", failing)
    with pytest.raises(OSError, match="no such compiler"):
        kernels.build()
    with pytest.raises(OSError, match="no such compiler.*retry"):
        kernels.build()
    assert len(calls) == 1 and (tmp_path / "key" / kernels.FAILED).exists()
    with pytest.raises(OSError):
        kernels.build(retry=True)
    assert len(calls) == 2 and not (tmp_path / "key" / "ragscale_kernels.so").exists()
