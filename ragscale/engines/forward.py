"""The embedded engine's forward pass: a lean Llama decoder over the model's own weights.

Why not transformers' forward (profiled in the README's engine notes): a decoded token paid
~30 small ops per layer of Python and cache machinery, PyTorch's CPU attention is slow for
one-token queries, and every token read all dense weights (270 MB in bf16) at the ~6 GB/s this
machine's memory gives: 16-18 tokens/s. Here:

- **prefill** runs dense (the compute dtype; AMX/oneDNN GEMMs on weights reordered once) in
  *pages*: chunks of ``PAGE`` tokens aligned to absolute positions, one sequence at a time. A
  page's KV then depends only on the tokens before it, never on how much of the prompt was
  cached or what else was in the batch: the prefix cache reuses whole pages (like SGLang's
  ``--page-size``), so greedy outputs are identical with the cache on and off, cold or warm, by
  construction. (GEMM rows are *not* independent of the chunk's size here, measured, so chunks
  cannot be merged across pages.) 64-token pages ran 1.6x faster than 32 for a 1,000-token
  prompt; the price is the unreused part of the last page.
- **decode** reads quantised weights where the model has them (the GGUF's Q4_1 blocks), with
  the kernel chosen per CPU at load (``model_files.decode_kernel``): where the CPU has AMX, the
  4-bit groups repacked for torch's ``_weight_int4pack_mm_for_cpu`` and the tied LM head as
  per-channel int8 (~95 MB per token, what llama.cpp reads); elsewhere (AVX-512/AVX VNNI, no
  AMX: torch's 4-bit kernel ran at 0.45x llama.cpp there) the same weights as int8 rows through
  an integer GEMM with each activation row quantised on its own (``decode_step.linear``). Every
  kernel computes each row on its own (checked bit for bit in the tests).
- **attention in decode is cascaded**: a row's keys are a shared prefix (one tensor read by all
  samples of a prompt, or by prompts that share whole pages) and its own part (the rest of its
  prompt, then what it generates). Each part is one call of the decode attention op
  (``kernels``: ragscale's compiled kernel, or torch's fused kernel behind the same signature);
  the prefix's call leaves float32 output and log-sum-exp and the own part's call continues that
  softmax. A row's queries sit in one batch entry, its KV head's query group in the query
  dimension, and the prefix is ``expand``ed over the batch (no copy): the op computes each batch
  entry alone, so a sample gets the bits it gets decoded by itself. Without quantised weights
  (float32, or a model that ships dense weights) the linear layers are dense.
- KV lives in preallocated buffers, written in place; nothing is concatenated per token.
- a decode step's small ops (residuals, views) run in TorchScript's interpreter
  (``decode_step.decode_layers``): the same ops and bits as eager, without ~1,300 Python calls
  per token; where ragscale's kernels are built, each norm, the RoPE + KV write and the gated
  MLP's middle are one call each instead of 6-10 torch ops (``kernels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ragscale.engines import kernels
from ragscale.engines.decode_step import (
    DENSE,
    INT4,
    INT8,
    ONEDNN,
    DecodeShape,
    DecodeWeights,
    decode_layers,
    gated_mlp,
    linear,
    rms_norm,
    rope_in_place,
    scripted_decode_layers,
)

PAGE = 64  # tokens per prefill chunk and per cached KV page
Q4_GROUP = 32  # GGUF Q4_1 block size = the int4 kernel's group size


class DenseLinear:
    """y = x W^T + b, with W reordered once for oneDNN where torch has it: ``F.linear`` reorders
    the weight on every call, a cost the size of the GEMM itself for a page of tokens (measured
    in one run: 1.3-2x per GEMM, 5-10% per page). bf16 only: there it gives ``F.linear``'s bits
    (checked in the tests); float32 single rows go to a different kernel with other roundings."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool = True):
        """``pack=False``: no reordered copy (``F.linear`` on ``weight`` itself, same bits)."""
        if pack and torch.backends.mkldnn.is_available() and weight.dtype == torch.bfloat16:
            self.kernel = (ONEDNN, torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PAGE), None, bias)
        else:
            self.kernel = (DENSE, weight.contiguous(), None, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, *self.kernel)


class Int4Linear:
    """y = x W^T with W stored as 4-bit groups: W[n, k] = (q - 8) * scale + zero per 32 inputs.

    Q4_1's ``d * q + m`` is the same thing with scale = d and zero = m + 8 d."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bias: torch.Tensor | None,
                 dtype: torch.dtype):
        # q: [N, K] ints 0..15; scale, offset (Q4_1's d and m): [N, K / 32]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        zero = offset.float() + 8 * scale.float()
        scales_zeros = torch.stack([scale.float(), zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
        self.kernel = (INT4, packed, scales_zeros, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, *self.kernel)


class Int8Linear:
    """Int8 weights with one scale per output row. ``integer_gemm=False``: torch's weight-only
    ``_weight_int8pack_mm`` (bf16 activations; the LM head next to 4-bit layers where AMX runs
    them). ``integer_gemm=True``: the ``INT8`` kernel of ``decode_step.linear`` (activations
    quantised per row, an integer GEMM on VNNI), the decode kernel on CPUs without AMX."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, rows_per_chunk: int = 4096,
                 bias: torch.Tensor | None = None, integer_gemm: bool = False):
        # Row by row in chunks (each row's scale and values depend on that row alone): an LM
        # head in float32 at once held ~4 copies of it, a 300 MB peak at load for SmolLM2.
        self.q = torch.empty(weight.shape, dtype=torch.int8)
        scales = []
        for start in range(0, weight.shape[0], rows_per_chunk):
            w = weight[start:start + rows_per_chunk].float()
            scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
            self.q[start:start + rows_per_chunk] = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            scales.append(scale)
        scale = torch.cat(scales)
        self.scale = scale.to(dtype)
        # the integer kernel's rescale: activation (largest / 127) x weight (scale), in float32
        self.kernel = (INT8, self.q, scale / 127, bias) if integer_gemm else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            return linear(x, *self.kernel)
        return torch.ops.aten._weight_int8pack_mm(x, self.q, self.scale)


@dataclass
class Layer:
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    qkv: DenseLinear
    o: DenseLinear
    gate_up: DenseLinear
    down: DenseLinear
    # 4-bit or int8 twins for decode; None: decode is dense
    qkv_q: Int4Linear | Int8Linear | None = None
    o_q: Int4Linear | Int8Linear | None = None
    gate_up_q: Int4Linear | Int8Linear | None = None
    down_q: Int4Linear | Int8Linear | None = None


SUPPORTED_MODEL_TYPES = ("llama",)


def rope_tables(config, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos and sin [context window, head_dim] of every position, with the bits of
    transformers' LlamaRotaryEmbedding (checked in the tests) and any rope scaling the config
    asks for. Its module is not imported for the usual rope types: importing modeling_llama
    pulls in ~1,500 modules (accelerate, sympy ...) and 126 MB of resident memory, for two lines
    of arithmetic. Rope types whose frequencies depend on the sequence length (dynamic,
    longrope) take transformers' module itself."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    positions = torch.arange(config.max_position_embeddings)[None]
    rope = config.rope_parameters
    if rope["rope_type"] in ("dynamic", "longrope"):
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        cos, sin = LlamaRotaryEmbedding(config=config)(torch.zeros(1, dtype=torch.float32), positions)
        return cos[0], sin[0]
    if rope["rope_type"] == "default":
        inverse_freq = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        scaling = 1.0
    else:
        inverse_freq, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config)
    angles = positions[0, :, None].float() * inverse_freq.float()
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos() * scaling, angles.sin() * scaling


class MissingWeight(KeyError):
    """The model's files lack a parameter the forward pass needs."""


def _required(tensor, name: str) -> torch.Tensor:
    value = tensor(name)
    if value is None:
        raise MissingWeight(f"no {name} in the model's weights")
    return value


class LlamaDecoder:
    """Prefill pages and decode steps for a Llama-architecture model (SmolLM2, TinyLlama, Llama 2/3 ...).

    KV buffers are ``[layers, 2, rows, kv_heads, capacity, head_dim]``; in prefill row ``b``'s
    token at position ``p`` lives at ``[:, :, b, :, p]``; in decode a row's own buffer holds
    its keys from its shared prefix's end on (``decode``).
    """

    def __init__(self, config, dtype: torch.dtype, tensor, q4_blocks=None, decode_kernel: str = INT4):
        """``config``: the model's transformers config. ``tensor(name)``: the parameter ``name``
        (Hugging Face naming, e.g. ``model.layers.0.mlp.up_proj.weight``) in ``dtype``, or None
        if the model has none (a bias). ``q4_blocks(names)``: {name: (q, d, m)} for those
        projection weights, from a Q4_1 GGUF (``model_files.unpack_q4_1``), to decode with
        quantised weights; None: dense decode. ``decode_kernel`` (with ``q4_blocks``): ``INT4``
        decodes with the GGUF's 4-bit groups and an int8 weight-only head (AMX CPUs), ``INT8``
        with the same weights re-quantised to int8 rows and the integer kernel (CPUs without
        AMX; ``model_files.decode_kernel`` chooses).

        Weights are read one layer at a time and each source tensor is dropped once packed, so
        the model is never held twice (a transformers model built first, then repacked, kept
        ~1 GB resident after load: glibc does not return its freed arena)."""
        self.config = config
        self.dtype = dtype
        self.layers_n = config.num_hidden_layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        self._q_end = self.heads * self.head_dim  # where the fused projection's q ends and k | v begin
        self.eps = config.rms_norm_eps
        self._eps = torch.tensor(self.eps, dtype=torch.float32)
        self._inverse_width = torch.tensor(1 / config.hidden_size, dtype=torch.float32)
        self.embed = _required(tensor, "model.embed_tokens.weight")
        self.final_norm = _required(tensor, "model.norm.weight")
        self.quantized_decode = q4_blocks is not None and self.dtype == torch.bfloat16
        self.decode_kernel = decode_kernel if self.quantized_decode else DENSE
        # Tied models use the embedding as the LM head (as transformers does, whatever the file holds).
        tied = getattr(config, "tie_word_embeddings", False)
        head = self.embed if tied else _required(tensor, "lm_head.weight")
        # With 4-bit decode the dense head only serves prefill's last token and scoring: a tied
        # head then skips the reordered copy (57 MB for SmolLM2; +0.2 ms a prompt, same bits).
        self.head = DenseLinear(head, None, pack=not (tied and self.quantized_decode))
        self.context_window = config.max_position_embeddings
        cos, sin = rope_tables(config, self.head_dim)
        half = self.head_dim // 2
        self.cos = cos.to(self.dtype)
        self.signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).to(self.dtype)  # see rope_in_place
        self.use_ops(None)

        def bias(names, weights):
            biases = [tensor(n[:-len("weight")] + "bias") for n in names]
            if all(b is None for b in biases):
                return None
            return torch.cat([b if b is not None else torch.zeros(w.shape[0], dtype=self.dtype)
                              for b, w in zip(biases, weights)])

        def fused_linear(names):
            weights = [_required(tensor, n) for n in names]
            # Fused projections: one GEMM (one pass over the input) instead of three or two.
            return DenseLinear(weights[0] if len(weights) == 1 else torch.cat(weights), bias(names, weights))

        self.layers = []
        for i in range(self.layers_n):
            pre = f"model.layers.{i}."
            groups = {"qkv": [pre + f"self_attn.{p}_proj.weight" for p in "qkv"],
                      "o": [pre + "self_attn.o_proj.weight"],
                      "gate_up": [pre + "mlp.gate_proj.weight", pre + "mlp.up_proj.weight"],
                      "down": [pre + "mlp.down_proj.weight"]}
            layer = Layer(attn_norm=_required(tensor, pre + "input_layernorm.weight"),
                          mlp_norm=_required(tensor, pre + "post_attention_layernorm.weight"),
                          **{name: fused_linear(names) for name, names in groups.items()})
            if self.quantized_decode:
                blocks = q4_blocks([n for names in groups.values() for n in names])
                for name, names in groups.items():
                    parts = [blocks.pop(n) for n in names]
                    q, d, m = (torch.cat([p[j] for p in parts]) for j in range(3))
                    layer_bias = getattr(layer, name).kernel[3]
                    if self.decode_kernel == INT8:
                        # the GGUF's values d q + m exactly (float32), then one int8 scale per row
                        dense = (q.view(q.shape[0], -1, Q4_GROUP).float() * d[..., None] + m[..., None]).view(q.shape)
                        twin = Int8Linear(dense, self.dtype, bias=layer_bias, integer_gemm=True)
                    else:
                        twin = Int4Linear(q, d, m, layer_bias, self.dtype)
                    setattr(layer, name + "_q", twin)
            self.layers.append(layer)
        self.head_q = Int8Linear(head, self.dtype, integer_gemm=self.decode_kernel == INT8) if self.quantized_decode else None
        kernels = [getattr(layer, name + ("_q" if self.quantized_decode else "")).kernel
                   for layer in self.layers for name in ("qkv", "o", "gate_up", "down")]
        self._decode_weights = DecodeWeights(
            [w for layer in self.layers for w in (layer.attn_norm, layer.mlp_norm)], self.final_norm,
            [k[0] for k in kernels], [k[1] for k in kernels], [k[2] for k in kernels], [k[3] for k in kernels],
            self._inverse_width, self._eps)
        # Dense bf16 decode (a model without a GGUF) uses oneDNN-packed weights: eager only.
        self._decode_eagerly = ONEDNN in self._decode_weights.kinds

    def use_ops(self, backend: str | None) -> None:
        """Decode's attention and norms on ``backend``: "ragscale" (the compiled kernels) or "torch"
        (None: ``kernels.choose``'s pick). ``ops`` names it and ``ops_why`` says why (benchmarks
        and logs show both)."""
        chosen, why = kernels.choose(self.head_dim)
        if backend not in (None, chosen):
            if backend == "ragscale":
                raise ValueError(f"ragscale's kernels cannot serve this model: {why}")
            chosen, why = backend, "asked for"
        self.ops, self.ops_why = chosen, why
        self._decode_shape = DecodeShape(self.heads, self.kv_heads, self.head_dim, self.scaling, self.eps, chosen)

    # -- buffers ---------------------------------------------------------------------------
    def new_kv(self, rows: int, capacity: int) -> torch.Tensor:
        # Uninitialised: every read (attention over positions 0..p, a page copied to the cache)
        # follows the write of those positions; zero-filling a 4-row buffer cost 34 ms a call.
        return torch.empty(self.layers_n, 2, rows, self.kv_heads, capacity, self.head_dim, dtype=self.dtype)

    def page_shape(self) -> tuple[int, ...]:
        return (self.layers_n, 2, self.kv_heads, PAGE, self.head_dim)

    # -- prefill ---------------------------------------------------------------------------
    def prefill(self, kv: torch.Tensor, row: int, ids: list[int], start: int) -> torch.Tensor:
        """Compute KV for ``ids[start:]`` into ``kv[:, :, row]`` (positions ``start..``; ``start`` a
        multiple of PAGE, the KV before it already in place), page by page. Returns the final
        hidden state of every new token, [len(ids) - start, hidden]."""
        if start % PAGE:
            raise ValueError("prefill must start on a page boundary")
        outs = []
        for begin in range(start, len(ids), PAGE):
            end = min(begin + PAGE, len(ids))
            outs.append(self._prefill_page(kv[:, :, row], ids[begin:end], begin))
        return torch.cat(outs)

    def _prefill_page(self, kv: torch.Tensor, ids: list[int], begin: int) -> torch.Tensor:
        tokens = len(ids)
        end = begin + tokens
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        q_end, norm = self._q_end, self._norm
        h = F.embedding(torch.tensor(ids), self.embed)
        cos, sin = self.cos[begin:end, None], self.signed_sin[begin:end, None]
        causal = torch.ones(tokens, end, dtype=torch.bool).tril(begin)  # query t sees keys 0 .. begin + t
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(norm(h, layer.attn_norm))
            rope_in_place(qkv, cos, sin, heads + kv_heads, dim)
            kv[i, :, :, begin:end] = qkv[:, q_end:].view(tokens, 2, kv_heads, dim).permute(1, 2, 0, 3)
            q = qkv[:, :q_end].view(tokens, heads, dim).transpose(0, 1)[None]
            attn = F.scaled_dot_product_attention(q, kv[i, 0, None, :, :end], kv[i, 1, None, :, :end],
                                                  attn_mask=causal, scale=self.scaling, enable_gqa=True)
            h = h + layer.o(attn[0].transpose(0, 1).reshape(tokens, q_end))
            h = h + gated_mlp(norm(h, layer.mlp_norm), layer.gate_up.kernel, layer.down.kernel)
        return norm(h, self.final_norm)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, weight, self._inverse_width, self._eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense LM head, float32 logits (prefill's last token and scoring)."""
        return self.head(hidden).float()

    # -- decode ----------------------------------------------------------------------------
    def decode(self, kv: torch.Tensor, rows: list[int], tokens: list[int], positions: list[int],
               starts: list[int], prefixes: list[torch.Tensor], prefix_of: list[int]) -> torch.Tensor:
        """One token for each of ``rows`` (token ``tokens[j]`` at absolute position ``positions[j]``),
        returning float32 logits [len(rows), vocab]. Row ``rows[j]``'s keys before ``starts[j]``
        are the shared prefix ``prefixes[prefix_of[j]]`` ([layers, 2, kv_heads, starts[j], dim]);
        from ``starts[j]`` on they are in its own row of ``kv``, at ``position - start`` (the new
        token's KV is written there). The layers run in ``decode_layers``."""
        own_positions = [p - s for p, s in zip(positions, starts)]
        if len(rows) == 1:
            p = positions[0]
            cos, sin = self.cos[p:p + 1, None], self.signed_sin[p:p + 1, None]
            row_index = own_pos = None
        else:
            pos = torch.tensor(positions)
            row_index, own_pos = torch.tensor(rows), torch.tensor(own_positions)
            cos, sin = self.cos[pos][:, None], self.signed_sin[pos][:, None]
        prefix_runs = [(j, size, g) for j, size, g, _ in _same_length_runs(prefix_of, [0] * len(rows), step=0)]
        own_runs = _same_length_runs(rows, own_positions)
        h = F.embedding(torch.tensor(tokens), self.embed)
        run = decode_layers if self._decode_eagerly else scripted_decode_layers()
        h = run(h, kv, rows, own_positions, row_index, own_pos, prefixes, prefix_runs, own_runs, cos, sin,
                self._decode_weights, self._decode_shape)
        return (self.head_q(h) if self.quantized_decode else self.head(h)).float()


def _same_length_runs(rows: list[int], positions: list[int], step: int = 1) -> list[tuple[int, int, int, int]]:
    """(first index, size, first row, position) of each run of adjacent rows (consecutive ids,
    ``step`` apart: 0 for one shared prefix) at one position: samples of one prompt, decoded in
    step. Their attention is one call, each row still over its own keys only (the kernel
    computes every batch entry alone: same bits as row by row, checked in the tests)."""
    runs: list[list[int]] = []
    for j, (row, position) in enumerate(zip(rows, positions)):
        last = runs[-1] if runs else None
        if last and row == last[2] + step * last[1] and position == last[3]:
            last[1] += 1
        else:
            runs.append([j, 1, row, position])
    return [tuple(run) for run in runs]
