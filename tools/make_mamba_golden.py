#!/usr/bin/env python3
"""Golden data for the Mamba language models (issue 6, MATH.md section 6; issue 18).

Creates tiny randomly initialized Hugging Face checkpoints under tests/data/ and records, in each
`golden.json`, the logits of a fixed prompt followed by its greedy continuation, computed with
transformers' pure-PyTorch path on the CPU (no CUDA kernels):

  mamba/tiny           MambaForCausalLM (2 layers, d_model 64, vocab 256): config.json + model.safetensors
  falcon_mamba/tiny    FalconMambaForCausalLM, the same sizes (its mixer RMS-normalizes dt, B and C)
  mamba/tiny_sharded   mamba/tiny as save_pretrained(max_shard_size=...) writes it: model.safetensors.index.json
                       + shards (no golden.json: the logits are mamba/tiny's, checked here)
  mamba/tiny_resized   mamba/tiny after resize_token_embeddings(257), with pad_vocab_size_multiple 8 in its
                       config.json as the converted hub checkpoints (state-spaces/mamba-*-hf) carry it

The derived fixtures start from the committed mamba/tiny, so that they can be remade without it changing.

Usage (needs `pip install torch transformers safetensors`; never run in CI):
    python3 tools/make_mamba_golden.py [--only mamba,falcon_mamba,sharded,resized] [data_dir]
"""
import argparse
import json
import os

import torch
import transformers
from transformers import FalconMambaConfig, FalconMambaForCausalLM, MambaConfig, MambaForCausalLM

SEED = 1234
PROMPT = [1, 17, 42, 99, 3, 250, 128, 7, 64, 200, 31, 5]
NEW_TOKENS = 20

# The tiny sizes shared by Mamba and FalconMamba.
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    state_size=16,
    num_hidden_layers=2,
    expand=2,
    conv_kernel=4,
    time_step_rank="auto",  # ceil(64 / 16) = 4
    use_bias=False,
    use_conv_bias=True,
    layer_norm_epsilon=1e-5,
    residual_in_fp32=True,
    tie_word_embeddings=True,
    use_mambapy=False,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)


def perturb(model):
    """Published initialization leaves D = 1, norm weights = 1 and conv biases near 0: perturb every
    parameter so that a loader that ignored any of them would fail the comparison."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith(".D"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("conv1d.bias") or name.endswith("dt_proj.bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(1.0 + 0.1 * torch.randn_like(p))
        # With the default scale the tied embedding dominates the residual stream and the greedy
        # continuation just repeats the last prompt token; a larger out_proj makes it vary.
        for name, p in model.named_parameters():
            if name.endswith("out_proj.weight"):
                p.mul_(6.0)


def save(model, out, **kwargs):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    for extra in ("generation_config.json",):
        path = os.path.join(out, extra)
        if os.path.exists(path):
            os.remove(path)


def golden(model, name):
    """Greedy continuation of PROMPT, one full forward per token (independent of the cache path), checked
    against generate() with the recurrent cache; the logits of every position."""
    with torch.no_grad():
        ids = list(PROMPT)
        margins = []
        for _ in range(NEW_TOKENS):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
        gen = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
        assert gen[0].tolist() == ids, (gen[0].tolist(), ids)
        all_logits = model(torch.tensor([ids])).logits[0]  # (l, vocab)
    return {
        "generator": f"tools/make_mamba_golden.py ({name}), transformers {transformers.__version__}, "
                     f"torch {torch.__version__}, seed {SEED}",
        "prompt": PROMPT,
        "continuation": ids[len(PROMPT):],
        "min_top2_margin": min(margins),
        "tokens": ids,
        "logits": [[float(x) for x in row] for row in all_logits],
    }


def write_golden(model, out, name):
    g = golden(model, name)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(g, f)
    print("wrote", out, "continuation", g["continuation"], "min margin", g["min_top2_margin"])
    return g


def make_mamba(data):
    torch.manual_seed(SEED)
    model = MambaForCausalLM(MambaConfig(**TINY)).eval()
    perturb(model)
    out = os.path.join(data, "mamba", "tiny")
    save(model, out)
    write_golden(model, out, "mamba")


def make_falcon_mamba(data):
    torch.manual_seed(SEED)
    # mixer_rms_eps left at FalconMambaConfig's default (1e-6), as in tiiuae/falcon-mamba-7b.
    model = FalconMambaForCausalLM(FalconMambaConfig(**TINY)).eval()
    perturb(model)
    out = os.path.join(data, "falcon_mamba", "tiny")
    save(model, out)
    write_golden(model, out, "falcon_mamba")


def tiny_mamba(data):
    return MambaForCausalLM.from_pretrained(os.path.join(data, "mamba", "tiny")).eval()


def make_sharded(data):
    model = tiny_mamba(data)
    out = os.path.join(data, "mamba", "tiny_sharded")
    save(model, out, max_shard_size="100KB")
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json")), os.listdir(out)
    back = MambaForCausalLM.from_pretrained(out).eval()
    with open(os.path.join(data, "mamba", "tiny", "golden.json")) as f:
        ref = json.load(f)
    with torch.no_grad():
        got = back(torch.tensor([ref["tokens"]])).logits[0]
    assert torch.allclose(got, torch.tensor(ref["logits"]), rtol=0, atol=1e-5), "sharded copy differs from mamba/tiny"
    print("wrote", out, sorted(os.listdir(out)))


def make_resized(data):
    torch.manual_seed(SEED)
    model = tiny_mamba(data)
    model.resize_token_embeddings(257)  # not a multiple of 8: what adding one special token leaves
    model.config.pad_vocab_size_multiple = 8
    out = os.path.join(data, "mamba", "tiny_resized")
    save(model, out)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == 257 and cfg["pad_vocab_size_multiple"] == 8, cfg
    back = MambaForCausalLM.from_pretrained(out).eval()
    assert back.get_input_embeddings().weight.shape[0] == 257
    write_golden(back, out, "mamba resized to vocab 257")


MAKERS = {"mamba": make_mamba, "falcon_mamba": make_falcon_mamba, "sharded": make_sharded, "resized": make_resized}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(MAKERS), help="comma-separated subset of " + ", ".join(MAKERS))
    ap.add_argument("data_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = ap.parse_args()
    for name in args.only.split(","):
        if name not in MAKERS:
            ap.error(f"unknown fixture '{name}' (known: {', '.join(MAKERS)})")
        MAKERS[name](args.data_dir)
