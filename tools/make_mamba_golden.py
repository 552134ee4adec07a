#!/usr/bin/env python3
"""Golden data for the Mamba language models (issue 6, docs/math.md section 6; issue 18).

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
import json
import os

import lm_golden
import torch
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
    lm_golden.perturb(model, bias_suffixes=("conv1d.bias", "dt_proj.bias"), a_log_scale=0.1, out_proj_scale=6.0)


def save(model, out, **kwargs):
    lm_golden.save(model, out, **kwargs)


def write_golden(model, out, name):
    generator = f"tools/make_mamba_golden.py ({name})"
    g = lm_golden.golden(model, generator, PROMPT, NEW_TOKENS)
    g["generator"] += f", seed {SEED}"
    return lm_golden.write_golden(out, g)


def make_tiny(data, model_class, config_class, subdir, name):
    torch.manual_seed(SEED)
    model = model_class(config_class(**TINY)).eval()
    perturb(model)
    out = os.path.join(data, subdir, "tiny")
    save(model, out)
    write_golden(model, out, name)


def make_mamba(data):
    make_tiny(data, MambaForCausalLM, MambaConfig, "mamba", "mamba")


def make_falcon_mamba(data):
    # mixer_rms_eps left at FalconMambaConfig's default (1e-6), as in tiiuae/falcon-mamba-7b.
    make_tiny(data, FalconMambaForCausalLM, FalconMambaConfig, "falcon_mamba", "falcon_mamba")


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
    lm_golden.main(__doc__, MAKERS, os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
