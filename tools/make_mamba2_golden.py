#!/usr/bin/env python3
"""Golden data for the Mamba-2 language model (issue 15 item 6; docs/math.md section 8, docs/mamba2.md).

Creates tiny randomly initialized Hugging Face Mamba2ForCausalLM checkpoints under tests/data/mamba2/ and records,
in each `golden.json`, the logits of a fixed prompt followed by its greedy continuation, computed with transformers'
pure-PyTorch path on the CPU (torch_forward: mamba2_chunk_scan and MambaRMSNormGated in torch, no kernels):

  heads4     head_dim 16 (4 heads), 1 group, chunk 8, tied embeddings, f32
  groups2    head_dim 8 (8 heads), 2 groups of 4 heads, chunk 5, untied embeddings, in_proj / out_proj biases,
             time_step_limit (0.002, 0.02), which clamps about a fifth of the steps at each end; f32
  bf16       head_dim 32 (2 heads), 2 groups of one head, chunk 16, tied, the weights stored as bf16 (the golden is
             the f32 model made of the bf16-rounded weights)

Every chunk size leaves a remainder at some length of the run (the prompt has 10 tokens, the full run 22).
transformers' generate() (one-token recurrent steps) is checked against the per-token full forward for each model;
its step ignores time_step_limit, so for groups2 that check is skipped (the library's step clamps, and its own test
compares prefill + steps with the parallel forward).

Usage (needs torch, transformers, safetensors; never run in CI):
    /tmp/venv-loader/bin/python tools/make_mamba2_golden.py [--only heads4,groups2,bf16] [data_dir]
"""
import os

import lm_golden
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

SEED = 4321
PROMPT = [1, 17, 42, 99, 3, 120, 64, 7, 31, 5]
NEW_TOKENS = 12

BASE = dict(
    vocab_size=128,
    hidden_size=32,
    state_size=8,
    num_hidden_layers=2,
    expand=2,  # d_inner 64
    conv_kernel=4,
    use_bias=False,
    use_conv_bias=True,
    layer_norm_epsilon=1e-5,
    residual_in_fp32=True,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)

CONFIGS = {
    "heads4": dict(head_dim=16, num_heads=4, n_groups=1, chunk_size=8, tie_word_embeddings=True),
    "groups2": dict(head_dim=8, num_heads=8, n_groups=2, chunk_size=5, tie_word_embeddings=False, use_bias=True,
                    time_step_limit=(0.002, 0.02)),
    "bf16": dict(head_dim=32, num_heads=2, n_groups=2, chunk_size=16, tie_word_embeddings=True),
}


def make(data, name):
    torch.manual_seed(SEED)
    cfg = Mamba2Config(**{**BASE, **CONFIGS[name]})
    model = Mamba2ForCausalLM(cfg).eval()
    lm_golden.perturb(model, bias_suffixes=("conv1d.bias", "dt_bias", "proj.bias"), a_log_scale=0.3, out_proj_scale=4.0)
    out = os.path.join(data, "mamba2", name)
    if name == "bf16":
        lm_golden.save(model.to(torch.bfloat16), out)
        model = Mamba2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # the rounded weights in f32
    else:
        lm_golden.save(model, out)
    g = lm_golden.golden(model, f"tools/make_mamba2_golden.py ({name})", PROMPT, NEW_TOKENS,
                         check_generate=name != "groups2", digits=7)
    g["generator"] += f", seed {SEED}"
    lm_golden.write_golden(out, g)


if __name__ == "__main__":
    lm_golden.main(__doc__, {name: (lambda data, name=name: make(data, name)) for name in CONFIGS},
                   os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
