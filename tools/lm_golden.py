"""What the golden scripts of the language models share (tools/make_mamba_golden.py, tools/make_mamba2_golden.py,
tools/make_rwkv_golden.py): perturbing a freshly initialized transformers model so that every parameter matters,
saving it as the library reads it, and recording its golden.json: the logits of a fixed prompt followed by its greedy
continuation, computed with one full forward per token (independent of the cache path) and checked against generate()
with the recurrent cache.

Imported by those scripts (needs torch and transformers); never run in CI.
"""
import argparse
import json
import os

import torch
import transformers


def perturb(model, bias_suffixes, a_log_scale, out_proj_scale):
    """Published initialization leaves D = 1, norm weights = 1 and biases near 0: perturb every parameter so that a
    loader that ignored any of them would fail the comparison. Then scale out_proj by out_proj_scale: with the
    default scale the tied embedding dominates the residual stream and the greedy continuation just repeats a
    token."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith(".D"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith(tuple(bias_suffixes)):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.add_(a_log_scale * torch.randn_like(p))
            else:
                p.mul_(1.0 + 0.1 * torch.randn_like(p))
        for name, p in model.named_parameters():
            if name.endswith("out_proj.weight"):
                p.mul_(out_proj_scale)


def save(model, out, **kwargs):
    """save_pretrained as safetensors into out, without generation_config.json (the library reads config.json)."""
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    path = os.path.join(out, "generation_config.json")
    if os.path.exists(path):
        os.remove(path)


def golden(model, generator, prompt, new_tokens, check_generate=True, digits=None, forward_kwargs=None,
           generate_kwargs=None):
    """The golden record of `model`: greedy continuation of prompt (new_tokens, one full forward per token, each
    step's top-2 margin kept), checked against generate() when check_generate; the logits of every position,
    rounded to `digits` significant digits when given. generator: who made it (stored in the record).
    forward_kwargs / generate_kwargs: extra keyword arguments of every full forward / of generate()."""
    forward_kwargs = forward_kwargs or {}
    with torch.no_grad():
        ids = list(prompt)
        margins = []
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids]), **forward_kwargs).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
        if check_generate:
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                                 **(generate_kwargs or {}))
            assert gen[0].tolist() == ids, (gen[0].tolist(), ids)
        all_logits = model(torch.tensor([ids]), **forward_kwargs).logits[0]  # (l, vocab)
    value = float if digits is None else (lambda x: float("%.*g" % (digits, x)))
    return {
        "generator": f"{generator}, transformers {transformers.__version__}, torch {torch.__version__}",
        "prompt": list(prompt),
        "continuation": ids[len(prompt):],
        "min_top2_margin": min(margins),
        "tokens": ids,
        "logits": [[value(x) for x in row] for row in all_logits],
    }


def write_golden(out, g):
    """Writes the record g as out/golden.json and says so."""
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(g, f)
    print("wrote", out, "continuation", g["continuation"], "min margin", g["min_top2_margin"])
    return g


def main(doc, makers, default_data_dir):
    """The scripts' command line: [--only a,b] [data_dir]; runs makers[name](data_dir) for each fixture named."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(makers), help="comma-separated subset of " + ", ".join(makers))
    ap.add_argument("data_dir", nargs="?", default=default_data_dir)
    args = ap.parse_args()
    for name in args.only.split(","):
        if name not in makers:
            ap.error(f"unknown fixture '{name}' (known: {', '.join(makers)})")
        makers[name](args.data_dir)
