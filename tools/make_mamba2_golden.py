#!/usr/bin/env python3
"""Golden data for the Mamba-2 language model (issue 15 item 6; MATH.md sections 7 and 11).

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
import argparse
import json
import os

import torch
import transformers
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


def perturb(model):
    """Perturb every parameter so that a loader that ignored one (D = 1, norms = 1, ...) fails the comparison."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith(".D"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("conv1d.bias") or name.endswith("dt_bias") or name.endswith("proj.bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.mul_(1.0 + 0.1 * torch.randn_like(p))
        for name, p in model.named_parameters():
            if name.endswith("out_proj.weight"):
                p.mul_(4.0)  # so that the continuation varies rather than repeating a token


def golden(model, name, check_generate=True):
    with torch.no_grad():
        ids = list(PROMPT)
        margins = []
        for _ in range(NEW_TOKENS):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
        if check_generate:
            gen = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
            assert gen[0].tolist() == ids, (gen[0].tolist(), ids)
        all_logits = model(torch.tensor([ids])).logits[0]  # (l, vocab)
    return {
        "generator": f"tools/make_mamba2_golden.py ({name}), transformers {transformers.__version__}, "
                     f"torch {torch.__version__}, seed {SEED}",
        "prompt": PROMPT,
        "continuation": ids[len(PROMPT):],
        "min_top2_margin": min(margins),
        "tokens": ids,
        "logits": [[float("%.7g" % x) for x in row] for row in all_logits],
    }


def make(data, name):
    torch.manual_seed(SEED)
    cfg = Mamba2Config(**{**BASE, **CONFIGS[name]})
    model = Mamba2ForCausalLM(cfg).eval()
    perturb(model)
    out = os.path.join(data, "mamba2", name)
    os.makedirs(out, exist_ok=True)
    if name == "bf16":
        model = model.to(torch.bfloat16)
        model.save_pretrained(out, safe_serialization=True)
        model = Mamba2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # the rounded weights in f32
    else:
        model.save_pretrained(out, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(out, extra)
        if os.path.exists(path):
            os.remove(path)
    g = golden(model, name, check_generate=name != "groups2")
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(g, f)
    print("wrote", out, "continuation", g["continuation"], "min margin", g["min_top2_margin"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    ap.add_argument("data_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = ap.parse_args()
    for name in args.only.split(","):
        if name not in CONFIGS:
            ap.error(f"unknown fixture '{name}' (known: {', '.join(CONFIGS)})")
        make(args.data_dir, name)
