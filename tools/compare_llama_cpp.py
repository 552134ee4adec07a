#!/usr/bin/env python3
"""Prefill and decode speed of ssm-generate against llama.cpp on the same Mamba checkpoint, on this machine, in
alternating rounds (this project's machines drift by tens of percent within minutes).

llama.cpp is not part of this repository: give the path of your own checkout, built with its tools (cmake -B build
&& cmake --build build --target llama-bench). Its converter (convert_hf_to_gguf.py, which needs the `gguf`,
`numpy`, `torch` and `transformers` packages) turns the checkpoint into one GGUF per weight dtype under --workdir;
llama-bench then times prefill (-p) and decode (-n) with -r 1 per round, and ssm-generate runs the same numbers of
prompt and generated tokens on the same directory (greedy, its own prefill and decode tokens/s, bf16 weights kept
in bf16). Without --model, a random-weight checkpoint of the Mamba-130m shape is made (f32 and bf16) with
transformers, as tools/compare_transformers.py does.

    python3 tools/compare_llama_cpp.py --llama-cpp ~/llama.cpp --ssm-generate build/apps/ssm-generate --rounds 3

Prints a Markdown table of medians: tokens/s of both and the ratio, per weight dtype and thread count. Never run
in CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_transformers import VOCAB, make_checkpoint, time_ssm  # noqa: E402  (one copy of each)

OUTTYPE = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def find_llama_bench(root):
    for rel in ("build/bin/llama-bench", "bin/llama-bench", "llama-bench"):
        path = os.path.join(root, rel)
        if os.access(path, os.X_OK):
            return path
    sys.exit(f"--llama-cpp: no executable llama-bench under {root} (looked in build/bin, bin and the root)")


def convert(root, model, dtype, workdir):
    out = os.path.join(workdir, f"{os.path.basename(os.path.normpath(model))}-{dtype}.gguf")
    if os.path.exists(out):
        return out
    script = os.path.join(root, "convert_hf_to_gguf.py")
    if not os.path.exists(script):
        sys.exit(f"--llama-cpp: {script} not found")
    r = subprocess.run([sys.executable, script, model, "--outtype", OUTTYPE[dtype], "--outfile", out + ".tmp"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed for {model} ({dtype}):\n{r.stderr[-3000:]}")
    os.replace(out + ".tmp", out)
    return out


def time_llama(bench, gguf, threads, prompt_len, new_tokens):
    r = subprocess.run([bench, "-m", gguf, "-p", str(prompt_len), "-n", str(new_tokens), "-t", str(threads),
                        "-r", "1", "-o", "json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama-bench failed on {gguf}:\n{r.stderr[-3000:]}")
    runs = json.loads(r.stdout)
    prefill = [x["avg_ts"] for x in runs if x.get("n_prompt", 0) > 0 and x.get("n_gen", 0) == 0]
    decode = [x["avg_ts"] for x in runs if x.get("n_gen", 0) > 0 and x.get("n_prompt", 0) == 0]
    if not prefill or not decode:
        sys.exit(f"cannot read prefill and decode tokens/s from llama-bench's JSON:\n{r.stdout[:2000]}")
    return prefill[0], decode[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="a llama.cpp checkout with llama-bench built")
    ap.add_argument("--ssm-generate", required=True, help="path of the built ssm-generate")
    ap.add_argument("--model", help="a Hugging Face Mamba checkpoint directory per dtype: DIR (used for every "
                    "dtype) or f32=DIR,bf16=DIR; default: random Mamba-130m-shaped checkpoints under --workdir")
    ap.add_argument("--workdir", default="/tmp/ssm-compare")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    opt = ap.parse_args()
    if not os.access(opt.ssm_generate, os.X_OK):
        ap.error(f"--ssm-generate: {opt.ssm_generate} is not an executable file")
    dtypes = opt.dtypes.split(",")
    for d in dtypes:
        if d not in OUTTYPE:
            ap.error(f"--dtypes: unknown dtype '{d}' (known: {', '.join(OUTTYPE)})")
    models = {}
    if opt.model:
        if "=" in opt.model:
            models = dict(kv.split("=", 1) for kv in opt.model.split(","))
        else:
            models = {d: opt.model for d in dtypes}
        for d in dtypes:
            if d not in models or not os.path.exists(os.path.join(models[d], "config.json")):
                ap.error(f"--model: no checkpoint directory (with config.json) for dtype {d}")
    bench = find_llama_bench(opt.llama_cpp)
    os.makedirs(opt.workdir, exist_ok=True)
    prompt = [(i * 7919 + 13) % VOCAB["mamba"] for i in range(opt.prompt_len)]
    rows = []
    for dtype in dtypes:
        path = models.get(dtype) or make_checkpoint(opt.workdir, "mamba", "130m", "bf16" if dtype == "bf16" else "f32")
        gguf = convert(opt.llama_cpp, path, dtype, opt.workdir)
        for t in map(int, opt.threads.split(",")):
            res = {"ssm": [], "llama.cpp": []}
            for _ in range(opt.rounds):  # alternating: both see the same drift
                res["ssm"].append(time_ssm(opt.ssm_generate, path, t, prompt, opt.new, []))
                res["llama.cpp"].append(time_llama(bench, gguf, t, opt.prompt_len, opt.new))
            med = {k: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v)) for k, v in res.items()}
            rows.append((dtype, t, med["ssm"], med["llama.cpp"]))
            print(f"{dtype} threads {t}: ssm {med['ssm']}, llama.cpp {med['llama.cpp']}", file=sys.stderr)
    print(f"| weights | threads | prefill {opt.prompt_len}, ssm | prefill, llama.cpp | ratio "
          f"| decode, ssm | decode, llama.cpp | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dtype, t, (sp, sd), (lp, ld) in rows:
        print(f"| {dtype} | {t} | {sp:.0f} | {lp:.0f} | {sp / lp:.1f}x | {sd:.1f} | {ld:.1f} | {sd / ld:.1f}x |")


if __name__ == "__main__":
    main()
