"""One decode step of the lean Llama decoder (``forward.LlamaDecoder``), written for TorchScript.

A decoded token is ~14 ms of memory-bound kernels at ~1,100 keys (4-bit GEMMs, attention, the
int8 head) and ~45 small ops per layer (norms, RoPE, residuals, views): ~1,300 calls per token,
each paying a few microseconds of Python in eager mode. ``decode_layers`` runs them in
TorchScript's interpreter instead: the same ops and the same bits (tested against the same
function run eagerly), 1.2-1.3x the eager speed measured side by side. The building blocks are
shared with prefill, which runs them eagerly (its time is in the GEMMs).

No ``from __future__ import annotations`` here: TorchScript cannot read postponed annotations in
a NamedTuple.
"""

import logging
import warnings
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# How a linear layer computes (strings: TorchScript reads no global constants)
INT4, ONEDNN, DENSE = "int4", "onednn", "dense"


def linear(x: torch.Tensor, kind: str, weight: torch.Tensor, aux: torch.Tensor | None,
           bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b with W as ``kind`` stores it: 4-bit groups (``aux``: scales and zeros), reordered
    for oneDNN, or dense."""
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


def decode_layers(h: torch.Tensor, kv: torch.Tensor, rows: list[int], positions: list[int],
                  row_index: torch.Tensor | None, pos: torch.Tensor | None,
                  groups: list[tuple[int, int, int, int]] | None, cos: torch.Tensor, signed_sin: torch.Tensor,
                  w: DecodeWeights, shape: DecodeShape) -> torch.Tensor:
    """Every layer for one new token per row (row ``rows[j]``'s token at ``positions[j]``, embedded
    in ``h``): writes its KV into ``kv`` and returns the final-normed hidden states. Several rows
    also come as tensors (``row_index``, ``pos``) and as runs of rows in step (``groups``); one row
    needs neither (None).

    Attention is PyTorch's fused kernel with grouped KV heads, each row over its own keys only:
    no padding, no dependence on the batch (adjacent rows at one position share a call, same
    bits: ``forward._same_length_runs``)."""
    n = len(rows)
    heads, kv_heads, dim = shape.heads, shape.kv_heads, shape.dim
    q_end = heads * dim
    # views taken once per step (a single row: its keys 0 .. p, and where position p's KV goes)
    keys, values, kv_at_p = kv[:, 0], kv[:, 1], kv[:, :, 0, :, 0]
    attn = torch.empty(0)
    if n == 1:
        row, p = rows[0], positions[0]
        keys, values = keys[:, row:row + 1, :, :p + 1], values[:, row:row + 1, :, :p + 1]
        kv_at_p = kv[:, :, row, :, p]
    else:
        attn = torch.empty(n, q_end, dtype=h.dtype)
    for i in range(len(w.norms) // 2):
        k = 4 * i
        qkv = linear(rms_norm(h, w.norms[2 * i], w.inverse_width, w.eps), w.kinds[k], w.weights[k], w.aux[k], w.biases[k])
        rope_in_place(qkv, cos, signed_sin, heads + kv_heads, dim)
        if n == 1:
            kv_at_p[i] = qkv[:, q_end:].view(2, kv_heads, dim)
            attn = F.scaled_dot_product_attention(qkv[:, :q_end].view(1, heads, 1, dim), keys[i], values[i],
                                                  scale=shape.scaling, enable_gqa=True).view(1, q_end)
        else:
            assert row_index is not None and pos is not None and groups is not None
            kv[i][:, row_index, :, pos] = qkv[:, q_end:].view(n, 2, kv_heads, dim)
            for j, size, r, pj in groups:
                attn[j:j + size] = F.scaled_dot_product_attention(
                    qkv[j:j + size, :q_end].view(size, heads, 1, dim), keys[i, r:r + size, :, :pj + 1],
                    values[i, r:r + size, :, :pj + 1], scale=shape.scaling, enable_gqa=True).view(size, q_end)
        h.add_(linear(attn, w.kinds[k + 1], w.weights[k + 1], w.aux[k + 1], w.biases[k + 1]))
        x = rms_norm(h, w.norms[2 * i + 1], w.inverse_width, w.eps)
        h.add_(gated_mlp(x, (w.kinds[k + 2], w.weights[k + 2], w.aux[k + 2], w.biases[k + 2]),
                         (w.kinds[k + 3], w.weights[k + 3], w.aux[k + 3], w.biases[k + 3])))
    return rms_norm(h, w.final_norm, w.inverse_width, w.eps)


@cache
def scripted_decode_layers():
    """``decode_layers`` compiled by TorchScript (well under a second, once per process). Measured
    side by side (README): the same bits as eager, 1.2x its speed. TorchScript is deprecated in
    PyTorch but ships in the pinned 2.13; if it cannot compile, the eager function runs instead."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return torch.jit.script(decode_layers)
    except (RuntimeError, OSError, torch.jit.frontend.FrontendError) as error:  # e.g. an op a future torch cannot script
        log.warning("decode runs eagerly: TorchScript could not compile it (%s)", error)
        return decode_layers
