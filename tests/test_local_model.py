"""``--model PATH``: a tiny random-weight Llama the tests build, through the engine, a sweep and a
tree search; the lean forward pass against transformers' own; the 4-bit decode kernels."""

from __future__ import annotations

import json

import pytest
import torch

from ragscale.cli import main
from ragscale.engines.base import SamplingParams
from ragscale.engines.forward import PAGE, Int4Linear, Int8Linear


def build_tiny_llama(folder, seed: int = 0, context: int = 2048):
    """A 2-layer Llama with random weights and SmolLM2's tokenizer (and so its chat template)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragscale.engines.model_files import load_tokenizer

    tokenizer = load_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform logits; sharper ones make greedy ties (and flaky tests) unlikely.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.model
def test_tiny_model_runs_in_the_engine_with_its_config_and_template(tiny_dir):
    from ragscale.engines.embedded import EmbeddedEngine

    on = EmbeddedEngine(model=str(tiny_dir), dtype="float32")
    off = EmbeddedEngine(model=str(tiny_dir), dtype="float32", prefix_cache=False)
    assert on.info.model == tiny_dir.name and on.info.context_window == 2048  # from its config
    assert "<|im_start|>assistant" in on.chat_prompt("hi")  # its tokenizer's template
    prompts = [on.chat_prompt("Background: " + "words and more words " * 12 + q) for q in ("One?", "Two?")]
    params = SamplingParams(max_new_tokens=12)
    first_on, first_off = on.generate(prompts, params), off.generate(prompts, params)
    assert [g.output_ids for g in first_on] == [g.output_ids for g in first_off]
    assert first_on[1].usage.cached_tokens > 0
    with pytest.raises(Exception, match="context window"):
        on.generate([[1] * 2040], SamplingParams(max_new_tokens=20))


@pytest.mark.model
def test_sweep_and_tree_search_run_a_model_given_by_path(tiny_dir, tmp_path, capsys):
    out = tmp_path / "results.sqlite"
    assert main(["sweep", "--dataset", "demo", "--strategies", "rag", "--k", "1", "--m", "0", "--n", "1",
                 "--limit", "2", "--batch-size", "2", "--model", str(tiny_dir), "--dtype", "float32",
                 "--out", str(out), "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)
    assert sweep["model"] == tiny_dir.name
    assert main(["search", "--policy", "beam", "--width", "2", "--max-depth", "2", "--step-tokens", "8",
                 "--model", str(tiny_dir), "--dtype", "float32", "--json"]) == 0
    search = json.loads(capsys.readouterr().out)
    assert search["tree"]["nodes"]  # the tree grew on the given model


def test_a_bad_model_path_is_one_clear_line(tmp_path, capsys):
    assert main(["search", "--model", str(tmp_path / "missing"), "--json"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["search", "--model", str(tmp_path / "empty"), "--json"]) == 2
    assert "config.json" in capsys.readouterr().err
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert main(["search", "--model", str(tmp_path / "weights.bin"), "--json"]) == 2
    assert ".gguf" in capsys.readouterr().err


@pytest.mark.model
def test_an_unsupported_architecture_is_refused(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path)
    assert main(["search", "--model", str(tmp_path), "--json"]) == 2
    assert "Llama-architecture" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lean_forward_matches_transformers(tiny_dir, dtype):
    from transformers import AutoModelForCausalLM

    from ragscale.engines import model_files

    loaded = model_files.load(str(tiny_dir), dtype)  # weights read straight from the safetensors
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=getattr(torch, dtype)).eval()
    ids = list(range(5, 5 + 2 * PAGE + 7))
    with torch.inference_mode():
        reference = model(input_ids=torch.tensor([ids])).logits[0].float()
        kv = loaded.decoder.new_kv(1, len(ids))
        hidden = loaded.decoder.prefill(kv, 0, ids, 0)
        ours = loaded.decoder.logits(hidden)
        # decode the last token again from the prefix's KV (the shared part: all but the last token)
        own = loaded.decoder.new_kv(1, 1)
        shared = len(ids) - 1
        stepped = loaded.decoder.decode(own, [0], [ids[-1]], [shared], [shared], [kv[:, :, 0, :, :shared]], [0])[0]
    tolerance = 2e-4 if dtype == "float32" else 0.3  # bf16: rounding of a different op order
    assert (ours - reference).abs().max() < tolerance
    assert (stepped - reference[-1]).abs().max() < tolerance


@pytest.mark.model
def test_a_page_gets_the_same_bits_whatever_was_cached(tiny_dir):
    """Prefill from a cached page boundary == prefill from scratch, bit for bit (bf16)."""
    from ragscale.engines import model_files

    decoder = model_files.load(str(tiny_dir), "bfloat16").decoder
    ids = [(7 * i) % 400 + 3 for i in range(3 * PAGE + 5)]
    with torch.inference_mode():
        whole = decoder.new_kv(1, len(ids))
        h_whole = decoder.prefill(whole, 0, ids, 0)
        resumed = decoder.new_kv(1, len(ids))
        resumed[:, :, 0, :, :2 * PAGE] = whole[:, :, 0, :, :2 * PAGE]
        h_resumed = decoder.prefill(resumed, 0, ids, 2 * PAGE)
    assert torch.equal(whole, resumed)
    assert torch.equal(h_whole[2 * PAGE:], h_resumed)


def test_int4_linear_is_q4_1_and_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    n, k = 48, 64
    q = torch.randint(0, 16, (n, k))
    d, m = torch.rand(n, k // 32) / 10, torch.randn(n, k // 32) / 10
    # bf16 scales, as the kernel keeps them
    d, m = d.bfloat16().float(), m.bfloat16().float()
    dense = (q.view(n, k // 32, 32) * d[..., None] + m[..., None]).view(n, k)
    layer = Int4Linear(q, d, m, None, torch.bfloat16)
    x = torch.randn(9, k).bfloat16()
    y = layer(x)
    assert torch.allclose(y.float(), x.float() @ dense.t(), rtol=0.02, atol=0.05)
    for rows in (1, 2, 5):
        assert torch.equal(layer(x[:rows].clone()), y[:rows])
    head = Int8Linear(torch.randn(n, k), torch.bfloat16)
    z = head(x)
    assert torch.equal(head(x[:1].clone()), z[:1])


@pytest.mark.model
@pytest.mark.parametrize("kernel", ["dense", "int4", "int8"])
def test_samples_decoded_in_step_get_the_bits_they_get_alone(tiny_dir, kernel, monkeypatch):
    """Sibling rows read one shared prefix (expanded, not copied) and decode in step: each row's
    logits and own KV are still exactly those of decoding it alone (bf16; dense, 4-bit and int8
    decode)."""
    decoder = _tiny_decoder(tiny_dir, "bfloat16", kernel)
    ids = [(11 * i) % 300 + 3 for i in range(PAGE + 9)]
    with torch.inference_mode():
        prompt = decoder.new_kv(1, len(ids))
        decoder.prefill(prompt, 0, ids, 0)
        prefix = prompt[:, :, 0]
        together = decoder.new_kv(3, 4)
        alone = decoder.new_kv(3, 4)
        tokens = [5, 9, 13]
        shared = [len(ids)] * 3
        stepped = decoder.decode(together, [0, 1, 2], tokens, [len(ids)] * 3, shared, [prefix], [0, 0, 0])
        for row in range(3):
            one = decoder.decode(alone, [row], [tokens[row]], [len(ids)], [len(ids)], [prefix], [0])
            assert torch.equal(one[0], stepped[row])
    assert torch.equal(together[..., :1, :], alone[..., :1, :])  # uninitialised past what was written


def _tiny_decoder(tiny_dir, dtype: str, kernel: str):
    """The tiny model's decoder in ``dtype``, decoding with ``kernel`` on random Q4_1 blocks
    ("int4", "int8") or dense ("dense")."""
    from transformers import AutoConfig

    from ragscale.engines import forward, model_files

    compute = getattr(torch, dtype)
    weights = model_files.SafetensorsWeights(sorted(tiny_dir.glob("*.safetensors")), compute)
    quantised = kernel != "dense"
    with torch.inference_mode():
        return forward.LlamaDecoder(AutoConfig.from_pretrained(tiny_dir), compute, weights,
                                    _random_q4_blocks(weights) if quantised else None,
                                    kernel if quantised else forward.INT4)


def _random_q4_blocks(weights, seed: int = 1):
    """Random Q4_1 blocks shaped like each weight: the quantised decode paths on the tiny model."""
    generator = torch.Generator().manual_seed(seed)

    def q4_blocks(names):
        out = {}
        for name in names:
            n, k = weights(name).shape
            out[name] = (torch.randint(0, 16, (n, k), generator=generator),
                         torch.rand(n, k // 32, generator=generator) / 20, torch.randn(n, k // 32, generator=generator) / 20)
        return out

    return q4_blocks


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_dense_linear_gives_f_linear_bits(dtype):
    from ragscale.engines.forward import DenseLinear

    torch.manual_seed(0)
    weight, bias = torch.randn(96, 64).to(dtype), torch.randn(96).to(dtype)
    layer = DenseLinear(weight, bias)
    for rows in (1, 3, PAGE):
        x = torch.randn(rows, 64).to(dtype)
        assert torch.equal(layer(x), torch.nn.functional.linear(x, weight, bias))


@pytest.mark.parametrize("rope", [
    None,
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 256},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256},
    {"rope_type": "dynamic", "factor": 2.0},
])
def test_rope_tables_have_the_bits_of_transformers_rotary_embedding(rope):
    """The lean pass computes cos/sin without importing modeling_llama; they must be its bits."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from ragscale.engines.forward import rope_tables

    extra = {"rope_parameters": {"rope_theta": 50000.0, **rope}} if rope else {}
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=1024, **extra)
    cos, sin = rope_tables(config, 16)
    want_cos, want_sin = LlamaRotaryEmbedding(config=config)(torch.zeros(1), torch.arange(1024)[None])
    assert torch.equal(cos, want_cos[0]) and torch.equal(sin, want_sin[0])


def test_int8_head_quantised_in_chunks_has_the_one_shot_bits():
    """Int8Linear quantises row chunks (a lower peak at load); each row's bits are unchanged."""
    torch.manual_seed(3)
    weight = (torch.randn(300, 64) * torch.rand(300, 1)).to(torch.bfloat16)
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    chunked = Int8Linear(weight, torch.bfloat16, rows_per_chunk=7)
    assert torch.equal(chunked.q, q) and torch.equal(chunked.scale, scale.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rope_in_place_has_the_bits_of_transformers_rotation(dtype):
    """One ``roll`` against a sign-folded sin table == transformers' q * cos + rotate_half(q) * sin."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from ragscale.engines.forward import rope_in_place

    torch.manual_seed(5)
    heads, kv_heads, dim, tokens = 4, 2, 16, 7
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim).to(dtype)
    angles = torch.rand(tokens, dim // 2) * 50
    cos, sin = torch.cat((angles, angles), -1).cos().to(dtype), torch.cat((angles, angles), -1).sin().to(dtype)
    q = qkv[:, :heads * dim].view(tokens, heads, dim).transpose(0, 1)[None]
    k = qkv[:, heads * dim:(heads + kv_heads) * dim].view(tokens, kv_heads, dim).transpose(0, 1)[None]
    want_q, want_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    signed_sin = torch.cat((-sin[:, :dim // 2], sin[:, dim // 2:]), -1)
    ours = qkv.clone()
    rope_in_place(ours, cos[:, None], signed_sin[:, None], heads + kv_heads, dim)
    assert torch.equal(ours[:, :heads * dim], want_q[0].transpose(0, 1).reshape(tokens, -1))
    assert torch.equal(ours[:, heads * dim:(heads + kv_heads) * dim], want_k[0].transpose(0, 1).reshape(tokens, -1))
    assert torch.equal(ours[:, (heads + kv_heads) * dim:], qkv[:, (heads + kv_heads) * dim:])  # v untouched


@pytest.mark.model
@pytest.mark.parametrize("dtype, kernel", [("float32", "dense"), ("bfloat16", "int4"), ("bfloat16", "int8")])
def test_torchscript_decode_has_the_bits_of_eager_decode(tiny_dir, dtype, kernel, monkeypatch):
    """Decode runs ``decode_layers`` compiled by TorchScript; run eagerly, the same function gives
    the same logits and KV bit for bit: one row, rows in step, rows at different positions."""
    from ragscale.engines import forward

    decoder = _tiny_decoder(tiny_dir, dtype, kernel)
    assert decoder.quantized_decode == (kernel != "dense") and decoder.decode_kernel == kernel
    assert isinstance(forward.scripted_decode_layers(), torch.jit.ScriptFunction)  # not the eager fallback
    ids = [(13 * i) % 500 + 3 for i in range(PAGE + 5)]
    start = [len(ids)] * 3
    steps = [([0], [7], [len(ids)], start[:1], [0]), ([0, 1, 2], [4, 5, 6], [len(ids)] * 3, start, [0, 0, 0]),
             ([0, 2], [8, 9], [len(ids) + 1, len(ids)], start[:2], [0, 0])]

    def run() -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.inference_mode():
            prompt = decoder.new_kv(1, len(ids))
            decoder.prefill(prompt, 0, ids, 0)
            kv = decoder.new_kv(3, 4)
            return [decoder.decode(kv, *step[:4], [prompt[:, :, 0]], step[4]) for step in steps], kv[..., :2, :]

    scripted_logits, scripted_kv = run()
    monkeypatch.setattr(forward, "scripted_decode_layers", lambda: forward.decode_layers)
    eager_logits, eager_kv = run()
    assert all(torch.equal(a, b) for a, b in zip(scripted_logits, eager_logits))
    # (the own buffers are uninitialised past what was written: row 0 up to 2 tokens, rows 1 and 2 one)
    assert torch.equal(scripted_kv[:, :, 0], eager_kv[:, :, 0])
    assert torch.equal(scripted_kv[:, :, 1:, :, :1], eager_kv[:, :, 1:, :, :1])


@pytest.mark.model
@pytest.mark.parametrize("dtype, kernel", [("float32", "dense"), ("bfloat16", "int4")])
def test_decode_on_ragscales_kernels_agrees_with_torchs_ops(tiny_dir, dtype, kernel, monkeypatch):
    """The decoder takes ragscale's compiled kernels where they are built, and decoding on them
    gives what torch's ops give up to rounding (torch's ops: the bits the engine gave before)."""
    from ragscale.engines import kernels

    if not kernels.ensure():
        pytest.skip("ragscale's kernels did not build here")
    decoder = _tiny_decoder(tiny_dir, dtype, kernel)
    assert decoder.ops == "ragscale"
    ids = [(7 * i) % 500 + 3 for i in range(PAGE + 9)]

    def logits() -> torch.Tensor:
        with torch.inference_mode():
            prompt = decoder.new_kv(1, PAGE)
            decoder.prefill(prompt, 0, ids[:PAGE], 0)
            own = decoder.new_kv(2, 16)
            steps = [decoder.decode(own, [0, 1], [ids[PAGE + t]] * 2, [PAGE + t] * 2, [PAGE] * 2,
                                    [prompt[:, :, 0]], [0, 0]) for t in range(9)]
            return torch.stack(steps)

    ours = logits()
    decoder.use_ops("torch")
    theirs = logits()
    tolerance = 1e-4 if dtype == "float32" else 0.15  # bf16: roundings differ, through every layer
    assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max()
    monkeypatch.setattr(kernels, "HEAD_DIMS", ())  # a model whose head size the kernel lacks
    decoder.use_ops(None)
    assert decoder.ops == "torch" and "head size" in decoder.ops_why
    with pytest.raises(ValueError, match="cannot serve"):
        decoder.use_ops("ragscale")


@pytest.mark.model
def test_the_start_probe_imports_everything_a_load_imports(tiny_dir):
    """``bench engine`` times library imports apart from the load: after ``import_libraries`` a
    load (from a model folder) must import nothing more, or the figures would be mislabelled."""
    import subprocess
    import sys

    code = ("import sys\nfrom ragscale.engines import model_files\nmodel_files.import_libraries()\n"
            f"before = set(sys.modules)\nmodel_files.load({str(tiny_dir)!r}, 'float32')\n"
            "print(sorted(set(sys.modules) - before))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
