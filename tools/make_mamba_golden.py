#!/usr/bin/env python3
"""Golden data for the Mamba language model (issue 6, MATH.md section 6).

Creates a tiny randomly initialized Hugging Face `MambaForCausalLM` (2 layers, d_model 64, vocab 256),
saves it as `config.json` + `model.safetensors` under tests/data/mamba/tiny/, and records, in
`golden.json`, the logits of a fixed prompt followed by its greedy continuation, computed with
transformers' pure-PyTorch path on the CPU (no CUDA kernels).

Usage (needs `pip install torch transformers safetensors`; never run in CI):
    python3 tools/make_mamba_golden.py [out_dir]
"""
import json
import os
import sys

import torch
import transformers
from transformers import MambaConfig, MambaForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "mamba", "tiny")
SEED = 1234
PROMPT = [1, 17, 42, 99, 3, 250, 128, 7, 64, 200, 31, 5]
NEW_TOKENS = 20

torch.manual_seed(SEED)
config = MambaConfig(
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
model = MambaForCausalLM(config).eval()

# Published initialization leaves D = 1, norm weights = 1 and conv biases near 0: perturb every
# parameter so that a loader that ignored any of them would fail the comparison.
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

os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
for extra in ("generation_config.json",):
    path = os.path.join(OUT, extra)
    if os.path.exists(path):
        os.remove(path)

with torch.no_grad():
    # Greedy continuation, one full forward per token (independent of the cache path) ...
    ids = list(PROMPT)
    margins = []
    for _ in range(NEW_TOKENS):
        logits = model(torch.tensor([ids])).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        margins.append(float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(logits)))
    # ... and the same through generate() with the recurrent cache.
    gen = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
    assert gen[0].tolist() == ids, (gen[0].tolist(), ids)
    all_logits = model(torch.tensor([ids])).logits[0]  # (l, vocab)

golden = {
    "generator": f"tools/make_mamba_golden.py, transformers {transformers.__version__}, torch {torch.__version__}, seed {SEED}",
    "prompt": PROMPT,
    "continuation": ids[len(PROMPT):],
    "min_top2_margin": min(margins),
    "tokens": ids,
    "logits": [[float(x) for x in row] for row in all_logits],
}
with open(os.path.join(OUT, "golden.json"), "w") as f:
    json.dump(golden, f)
print("wrote", OUT, "continuation", golden["continuation"], "min margin", min(margins))
