#!/usr/bin/env python3
"""Prefill and decode speed of ssm-generate against Hugging Face `transformers`, on the same checkpoint, on this
machine, in alternating rounds (the machines of this project drift by tens of percent within minutes).

Makes random-weight checkpoints of the published shapes in f32 and bf16 under --workdir: Mamba (130m: d_model 768,
24 layers; 370m: d_model 1024, 48 layers; vocab 50280, d_state 16) or, with --model rwkv, RWKV-4 (169m: 768, 12
layers; 430m: 1024, 24 layers; vocab 50277, FFN 4 d_model, rescale_every 6). Then for each shape, weight dtype and
thread count it times:
  - transformers (its pure-PyTorch path on the CPU, torch.set_num_threads(t), weights in the stored dtype):
    prefill = one forward over the prompt; decode = (new - 1) / (time of generate() - time of the prefill);
  - ssm-generate on the same directory with the same prompt ids, greedy, its own prefill and decode tokens/s.
Prints a Markdown table of medians over the rounds. Needs `pip install torch transformers safetensors`; never
run in CI.

    python3 tools/compare_transformers.py --ssm-generate build/tools/ssm-generate --rounds 3
    python3 tools/compare_transformers.py --ssm-generate build/tools/ssm-generate --model rwkv --shapes 169m
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

SHAPES = {"mamba": {"130m": (768, 24), "370m": (1024, 48)}, "rwkv": {"169m": (768, 12), "430m": (1024, 24)}}
VOCAB = {"mamba": 50280, "rwkv": 50277}


def model_class(kind):
    import transformers

    return transformers.MambaForCausalLM if kind == "mamba" else transformers.RwkvForCausalLM


def make_checkpoint(workdir, kind, shape, dtype):
    import torch
    from transformers import MambaConfig, RwkvConfig

    out = os.path.join(workdir, f"{kind}-{shape}-{dtype}")
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    d_model, n_layer = SHAPES[kind][shape]
    torch.manual_seed(0)
    if kind == "mamba":
        cfg = MambaConfig(vocab_size=VOCAB[kind], hidden_size=d_model, num_hidden_layers=n_layer, state_size=16,
                          expand=2, conv_kernel=4, use_mambapy=False, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    else:
        cfg = RwkvConfig(vocab_size=VOCAB[kind], hidden_size=d_model, num_hidden_layers=n_layer,
                         attention_hidden_size=d_model, intermediate_size=4 * d_model, rescale_every=6,
                         eos_token_id=0, bos_token_id=0)
    model = model_class(kind)(cfg).eval()  # saved before any forward: RWKV rescales its weights in its first one
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    return out


def time_transformers(kind, path, dtype, threads, prompt, new_tokens):
    import torch

    torch.set_num_threads(threads)
    model = model_class(kind).from_pretrained(path, torch_dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    model.eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        model(input_ids=ids[:, :8], use_cache=False)  # warm-up
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        t_gen = time.perf_counter() - t0
    return len(prompt) / t_prefill, (new_tokens - 1) / max(t_gen - t_prefill, 1e-9)


def time_ssm(binary, path, threads, prompt, new_tokens, extra):
    cmd = [binary, "--model", path, "--ids", " ".join(map(str, prompt)), "-n", str(new_tokens),
           "--temperature", "0", "--threads", str(threads), "--ignore-eos"] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ssm-generate failed: {r.stderr.strip()}")
    # ssm-generate's report lines: "prompt: 512 tokens, prefill 15.1 ms (33951.6 tokens/s)" and
    # "generated: 64 tokens, decode 1.69 ms for 63 steps (23074.8 tokens/s)".
    prefill = re.search(r"prompt:.*?\(([0-9.]+) tokens/s\)", r.stderr)
    decode = re.search(r"generated:.*?\(([0-9.]+) tokens/s\)", r.stderr)
    if not prefill or not decode:
        sys.exit(f"cannot read tokens/s from ssm-generate's output:\n{r.stderr}")
    return float(prefill.group(1)), float(decode.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ssm-generate", required=True, help="path of the built ssm-generate")
    ap.add_argument("--workdir", default="/tmp/ssm-compare")
    ap.add_argument("--model", default="mamba", choices=sorted(SHAPES))
    ap.add_argument("--shapes", default=None, help="comma-separated (default: every shape of --model)")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ssm-args", default="", help="extra ssm-generate arguments, space-separated")
    opt = ap.parse_args()
    if not os.access(opt.ssm_generate, os.X_OK):
        ap.error(f"--ssm-generate: {opt.ssm_generate} is not an executable file")
    shapes = opt.shapes.split(",") if opt.shapes else list(SHAPES[opt.model])
    for s in shapes:
        if s not in SHAPES[opt.model]:
            ap.error(f"--shapes: unknown {opt.model} shape '{s}' (known: {', '.join(SHAPES[opt.model])})")
    os.makedirs(opt.workdir, exist_ok=True)
    prompt = [(i * 7919 + 13) % VOCAB[opt.model] for i in range(opt.prompt_len)]
    rows = []
    for shape in shapes:
        for dtype in opt.dtypes.split(","):
            path = make_checkpoint(opt.workdir, opt.model, shape, dtype)
            for t in map(int, opt.threads.split(",")):
                res = {"ssm": [], "transformers": []}
                for _ in range(opt.rounds):  # alternating: both see the same drift
                    res["ssm"].append(time_ssm(opt.ssm_generate, path, t, prompt, opt.new, opt.ssm_args.split()))
                    res["transformers"].append(time_transformers(opt.model, path, dtype, t, prompt, opt.new))
                med = {k: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v)) for k, v in res.items()}
                rows.append((shape, dtype, t, med["ssm"], med["transformers"]))
                print(f"{shape} {dtype} threads {t}: ssm {med['ssm']}, transformers {med['transformers']}", file=sys.stderr)
    print(f"| shape | weights | threads | prefill {opt.prompt_len}, ssm | prefill, transformers | ratio "
          f"| decode, ssm | decode, transformers | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape, dtype, t, (sp, sd), (tp, td) in rows:
        print(f"| {shape} | {dtype} | {t} | {sp:.0f} | {tp:.0f} | {sp / tp:.1f}x | {sd:.1f} | {td:.1f} | {sd / td:.1f}x |")


if __name__ == "__main__":
    main()
