"""One decode step of the lean Llama decoder (``forward.LlamaDecoder``), written for TorchScript.

A decoded token is memory-bound kernels (4-bit GEMMs, attention, the int8 head) plus small ops
per layer (norms, RoPE, residuals, views), each paying a few microseconds of Python in eager
mode. ``decode_layers`` runs them in TorchScript's interpreter instead: the same ops and the same
bits (tested against the same function run eagerly), 1.2-1.3x the eager speed measured side by
side. Attention, the norms, RoPE with the KV write and the gated MLP's middle run on ragscale's
compiled kernels where they are built (``kernels``; ``DecodeShape.ops``), else on torch's ops;
the building blocks here are shared with prefill, which runs them eagerly (its time is in the
GEMMs).

No ``from __future__ import annotations`` here: TorchScript cannot read postponed annotations in
a NamedTuple.
"""

import logging
import warnings
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ragscale.engines import kernels

log = logging.getLogger(__name__)

# How a linear layer computes (strings: TorchScript reads no global constants)
INT4, INT8, ONEDNN, DENSE = "int4", "int8", "onednn", "dense"


def linear(x: torch.Tensor, kind: str, weight: torch.Tensor, aux: torch.Tensor | None,
           bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b with W as ``kind`` stores it: 4-bit groups (``aux``: scales and zeros), int8 rows
    (``aux``: each row's scale / 127, float32), reordered for oneDNN, or dense.

    int8: each input row is quantised to int8 with its own scale (its largest magnitude), the
    product is an integer GEMM (``torch._int_mm``: oneDNN's VNNI kernel; exact int32 sums), then
    rescaled. Every output row depends on its own input row only: no batch dependence, by
    construction."""
    if kind == "int8":
        assert aux is not None
        # (few ops: each is a call, and at ~120 linears a token they add up; the same values as
        # abs-amax in float32, a float32 product, then the rescale)
        largest = torch.linalg.vector_norm(x, float("inf"), -1, True, dtype=torch.float32).clamp_(min=1e-30)
        quantised = torch.mul(x, 127.0 / largest).round_().to(torch.int8)
        y = torch.mul(torch._int_mm(quantised, weight.t()), largest).mul_(aux).to(x.dtype)
        return y if bias is None else y + bias
    if kind == "int4":
        assert aux is not None
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, 32, aux)  # 32: Q4_GROUP
        return y if bias is None else y + bias
    if kind == "onednn" and not torch.jit.is_scripting():  # TorchScript cannot type this op's arguments
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, inverse_width: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """As transformers' LlamaRMSNorm: in float32, back to the compute dtype, then the weight. In
    place on a float32 copy (same bits, no temporaries); ``inverse_width`` and ``eps`` are float32
    tensors, since a Python float is converted to one on every call (a copy op, 122 per token).
    (torch.rms_norm took 15 us on a 576-vector here, these ops ~1 us each.)"""
    h = x.to(torch.float32, copy=True)
    mean_square = (h * h).sum(-1, keepdim=True)
    h.mul_(mean_square.mul_(inverse_width).add_(eps).rsqrt_())
    return h.to(x.dtype).mul_(weight)


def rope_in_place(qkv: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, rotated_heads: int, dim: int) -> None:
    """RoPE on the q and k parts of a fused [tokens, q | k | v] projection, together and in place:
    k and v then sit side by side, for one KV write. The half-rotation's minus sign is in
    ``signed_sin``, so the rotation is one ``roll``: x * cos + (x2, x1) * (-sin1, sin2), the bits of
    transformers' x * cos + (-x2, x1) * sin (negation is exact)."""
    qk = qkv[:, :rotated_heads * dim].view(qkv.shape[0], rotated_heads, dim)
    rotated = torch.roll(qk, dim // 2, -1).mul_(signed_sin)
    qk.mul_(cos).add_(rotated)


def gated_mlp(x: torch.Tensor, gate_up: tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
              down: tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
    """down(silu(gate) * up), with gate | up one fused projection."""
    gate_and_up = linear(x, gate_up[0], gate_up[1], gate_up[2], gate_up[3])
    half = gate_and_up.shape[-1] // 2
    hidden = F.silu(gate_and_up[:, :half]).mul_(gate_and_up[:, half:])
    return linear(hidden, down[0], down[1], down[2], down[3])


class DecodeWeights(NamedTuple):
    """Every layer's norms and linear kernels as flat lists (TorchScript takes lists, not objects):
    layer ``i``'s norms at ``2i, 2i + 1``; its qkv, o, gate_up, down kernels at ``4i .. 4i + 3``."""
    norms: list[torch.Tensor]
    final_norm: torch.Tensor
    kinds: list[str]
    weights: list[torch.Tensor]
    aux: list[torch.Tensor | None]
    biases: list[torch.Tensor | None]
    inverse_width: torch.Tensor
    eps: torch.Tensor


class DecodeShape(NamedTuple):
    heads: int
    kv_heads: int
    dim: int
    scaling: float
    eps: float
    ops: str  # "ragscale": ragscale's compiled kernels; "torch": torch's ops (``kernels.choose``)


def norm(x: torch.Tensor, weight: torch.Tensor, w: DecodeWeights, shape: DecodeShape) -> torch.Tensor:
    """``rms_norm`` on the ops ``shape.ops`` names: one call of ragscale's kernel, or torch's nine."""
    if shape.ops == "ragscale":
        return torch.ops.ragscale.rms_norm(x, weight, shape.eps)
    return rms_norm(x, weight, w.inverse_width, w.eps)


def mlp(x: torch.Tensor, gate_up: tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
        down: tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None], shape: DecodeShape) -> torch.Tensor:
    """``gated_mlp`` on the ops ``shape.ops`` names: silu(gate) * up in one call of ragscale's
    kernel, or torch's two."""
    if shape.ops == "ragscale":
        hidden = torch.ops.ragscale.silu_mul(linear(x, gate_up[0], gate_up[1], gate_up[2], gate_up[3]))
        return linear(hidden, down[0], down[1], down[2], down[3])
    return gated_mlp(x, gate_up, down)


def attend(q: torch.Tensor, kv: torch.Tensor, shape: DecodeShape, out: torch.Tensor, lse: torch.Tensor, first: int,
           rows: int, accumulate: bool) -> None:
    """Softmax attention of rows ``first .. first + rows`` of ``q`` over one part of their keys
    (``kv``: [2, rows, kv_heads, n, dim], or [2, kv_heads, n, dim] shared) into float32
    ``out``/``lse`` (continuing them when ``accumulate``), on the ops ``shape.ops`` names."""
    if shape.ops == "ragscale":
        torch.ops.ragscale.decode_attention(q, kv, shape.scaling, out, lse, first, rows, accumulate)
    else:
        torch.ops.ragscale.torch_decode_attention(q, kv, shape.scaling, out, lse, first, rows, accumulate)


def decode_layers(h: torch.Tensor, kv: torch.Tensor, rows: list[int], own_positions: list[int],
                  row_index: torch.Tensor | None, own_pos: torch.Tensor | None, prefixes: list[torch.Tensor],
                  prefix_runs: list[tuple[int, int, int]], own_runs: list[tuple[int, int, int, int]],
                  cos: torch.Tensor, signed_sin: torch.Tensor, w: DecodeWeights, shape: DecodeShape) -> torch.Tensor:
    """Every layer for one new token per row (row ``rows[j]``'s token, embedded in ``h``): writes
    its KV at ``own_positions[j]`` of the row's own buffer ``kv`` and returns the final-normed
    hidden states. Several rows also come as tensors (``row_index``, ``own_pos``); one needs
    neither (None).

    A row's keys are in two parts (cascade attention): a **shared prefix**, one KV tensor
    ``prefixes[g]`` [layers, 2, kv_heads, length, dim] read by every row of its group (the
    samples of one prompt, or prompts that share their first pages), and the row's **own** keys
    (the rest of its prompt and what it generated) in ``kv``. Each part is one call of the
    decode attention op (``kernels``): the prefix's call leaves float32 output and log-sum-exp,
    the own part's call continues that softmax. ``prefix_runs``: (first row index, rows, prefix) per
    group; ``own_runs``: (first index, rows, first buffer row, own position) per run of rows
    decoded in step.

    Bits: every call puts one row in each batch entry, its query heads (one KV head's group) in
    the query-length dimension, and the prefix is ``expand``ed over the batch (one copy in
    memory). The op computes each batch entry alone, so a row gets the bits it gets decoded by
    itself, whatever else is in its group."""
    n = len(rows)
    heads, kv_heads, dim = shape.heads, shape.kv_heads, shape.dim
    group = heads // kv_heads
    q_end = heads * dim
    out = torch.empty(n, kv_heads, group, dim, dtype=torch.float32)
    lse = torch.empty(n, kv_heads, group, dtype=torch.float32)
    for i in range(len(w.norms) // 2):
        k = 4 * i
        qkv = linear(norm(h, w.norms[2 * i], w, shape), w.kinds[k], w.weights[k], w.aux[k], w.biases[k])
        if shape.ops == "ragscale":
            torch.ops.ragscale.rope_store(qkv, cos, signed_sin, heads, kv_heads, kv[i], rows, own_positions)
        else:
            rope_in_place(qkv, cos, signed_sin, heads + kv_heads, dim)
            if n == 1:
                kv[i, :, rows[0], :, own_positions[0]] = qkv[:, q_end:].view(2, kv_heads, dim)
            else:
                assert row_index is not None and own_pos is not None
                kv[i][:, row_index, :, own_pos] = qkv[:, q_end:].view(n, 2, kv_heads, dim)
        q = qkv[:, :q_end].view(n, kv_heads, group, dim)
        for j, size, g in prefix_runs:
            attend(q, prefixes[g][i], shape, out, lse, j, size, False)
        for j, size, r, p in own_runs:  # continues the prefix's softmax over the row's own keys
            attend(q, kv[i, :, r:r + size, :, :p + 1], shape, out, lse, j, size, True)
        attn = out.to(h.dtype).view(n, q_end)
        h.add_(linear(attn, w.kinds[k + 1], w.weights[k + 1], w.aux[k + 1], w.biases[k + 1]))
        x = norm(h, w.norms[2 * i + 1], w, shape)
        h.add_(mlp(x, (w.kinds[k + 2], w.weights[k + 2], w.aux[k + 2], w.biases[k + 2]),
                   (w.kinds[k + 3], w.weights[k + 3], w.aux[k + 3], w.biases[k + 3]), shape))
    return norm(h, w.final_norm, w, shape)


@cache
def scripted_decode_layers():
    """``decode_layers`` compiled by TorchScript (well under a second, once per process). Measured
    side by side (README): the same bits as eager, 1.2x its speed. TorchScript is deprecated in
    PyTorch but ships in the pinned 2.13; if it cannot compile, the eager function runs instead."""
    kernels.ensure()  # TorchScript resolves torch.ops.ragscale.decode_attention when it compiles
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return torch.jit.script(decode_layers)
    except (RuntimeError, OSError, torch.jit.frontend.FrontendError) as error:  # e.g. an op a future torch cannot script
        log.warning("decode runs eagerly: TorchScript could not compile it (%s)", error)
        return decode_layers
