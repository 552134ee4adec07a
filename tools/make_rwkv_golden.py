#!/usr/bin/env python3
"""Golden data for the RWKV-4 language model.

Creates tiny randomly initialized Hugging Face RwkvForCausalLM checkpoints under tests/data/rwkv/ and records, in
each `golden.json`, the logits of a fixed prompt followed by its greedy continuation, computed with transformers'
pure-PyTorch path on the CPU (rwkv_linear_attention_cpu, no CUDA kernel):

  tiny       hidden 32, attention_hidden_size 32, intermediate 128, 3 layers, rescale_every 2: in eval mode
             transformers divides attention.output / feed_forward.value of block b by 2^(b // 2) and halves the
             hidden state after blocks 1, 3, ..., so both happen here (block 2); untied head; f32
  wide       attention_hidden_size 48 != hidden 32, intermediate 80, 2 layers, rescale_every 0 (no rescaling); f32
  bf16       as tiny but 2 layers and rescale_every 6 (nothing rescaled), the weights stored as bf16 (the golden is
             the f32 model made of the bf16-rounded weights)

transformers rescales the weights in place on the first eval-mode forward (RwkvModel._rescale_layers), so each
checkpoint is saved before any forward: it holds the unrescaled weights, as published checkpoints do. Each saved
checkpoint is reloaded into a fresh model whose logits are compared with the golden.

Every parameter is perturbed so that a loader that ignored any of them would fail the comparison: LayerNorm weights
and the other matrices multiplicatively (lm_golden.perturb), LayerNorm biases additively; time_decay and time_first
get additive noise (transformers' init leaves time_first all ones), the time_mix_* get additive noise clamped to
[0.02, 0.98]. The embeddings are scaled by EMB_SCALE: transformers' init (std 1e-4) leaves their variance far below
pre_ln's epsilon, so pre_ln would mostly see the epsilon. attention.output and feed_forward.value are scaled by
OUTPUT_SCALE (like out_proj_scale of the Mamba scripts, to make a greedy continuation that repeats one token vary);
these configs need none (1.0): their continuations vary and the script asserts it.

The full forwards run with use_cache=False (no state); transformers' generate() (prefill with a state, then
one-token recurrent steps) is checked against them. transformers allocates the wkv state (num, den, max) with
hidden_size channels, so with attention_hidden_size != hidden_size its cached forward fails; for wide, generate()
gets an initial state of the right shapes instead.

Usage (needs torch, transformers, safetensors; never run in CI):
    /tmp/venv-loader/bin/python tools/make_rwkv_golden.py [--only tiny,wide,bf16] [data_dir]
"""
import os

import lm_golden
import torch
from transformers import RwkvConfig, RwkvForCausalLM

SEED = 4321
PROMPT = [1, 17, 42, 99, 3, 120, 64, 7, 31, 5]
NEW_TOKENS = 12
EMB_SCALE = 1000.0
OUTPUT_SCALE = 1.0

BASE = dict(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=3,
    attention_hidden_size=32,
    intermediate_size=128,
    rescale_every=2,
    tie_word_embeddings=False,
    layer_norm_epsilon=1e-5,
    bos_token_id=0,
    eos_token_id=0,
)

CONFIGS = {
    "tiny": dict(),
    "wide": dict(attention_hidden_size=48, intermediate_size=80, num_hidden_layers=2, rescale_every=0),
    "bf16": dict(num_hidden_layers=2, rescale_every=6),
}


def perturb(model):
    lm_golden.perturb(model, bias_suffixes=("ln1.bias", "ln2.bias", "pre_ln.bias", "ln_out.bias"), a_log_scale=0.0,
                      out_proj_scale=1.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("time_decay", "time_first")):
                p.add_(0.3 * torch.randn_like(p))
            elif ".time_mix_" in name:
                p.add_(0.1 * torch.randn_like(p)).clamp_(0.02, 0.98)
            elif name.endswith("embeddings.weight"):
                p.mul_(EMB_SCALE)
            elif name.endswith(("attention.output.weight", "feed_forward.value.weight")):
                p.mul_(OUTPUT_SCALE)


def initial_state(cfg):
    """generate()'s initial state, [ffn shift, attention shift, num, den, max] of (batch 1, channels, layers), the
    wkv ones with attention_hidden_size channels (transformers would give them hidden_size)."""
    h, a, n = cfg.hidden_size, cfg.attention_hidden_size, cfg.num_hidden_layers
    return [torch.zeros(1, h, n), torch.zeros(1, h, n), torch.zeros(1, a, n), torch.zeros(1, a, n),
            torch.full((1, a, n), -1e30)]


def make(data, name):
    torch.manual_seed(SEED)
    cfg = RwkvConfig(**{**BASE, **CONFIGS[name]})
    model = RwkvForCausalLM(cfg).eval()
    perturb(model)
    out = os.path.join(data, "rwkv", name)
    # Saved before any forward: the first eval-mode forward rescales the weights in place.
    assert not model.rwkv.layers_are_rescaled
    if name == "bf16":
        lm_golden.save(model.to(torch.bfloat16), out)
        model = RwkvForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # the rounded weights in f32
    else:
        lm_golden.save(model, out)
    wide = cfg.attention_hidden_size != cfg.hidden_size
    g = lm_golden.golden(model, f"tools/make_rwkv_golden.py ({name})", PROMPT, NEW_TOKENS, digits=7,
                         forward_kwargs=dict(use_cache=False),
                         generate_kwargs=dict(state=initial_state(cfg)) if wide else None)
    g["generator"] += f", seed {SEED}"
    assert len(set(g["continuation"])) > 1 and g["min_top2_margin"] >= 1e-3, (g["continuation"], g["min_top2_margin"])
    # The checkpoint as saved, in a fresh model, gives the golden logits.
    fresh = RwkvForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not fresh.rwkv.layers_are_rescaled
    with torch.no_grad():
        logits = fresh(torch.tensor([g["tokens"]]), use_cache=False).logits[0]
    diff = float((logits - torch.tensor(g["logits"])).abs().max())
    assert diff < 1e-5, diff
    lm_golden.write_golden(out, g)
    print("  reloaded checkpoint: max abs logit diff", diff)


if __name__ == "__main__":
    lm_golden.main(__doc__, {name: (lambda data, name=name: make(data, name)) for name in CONFIGS},
                   os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
