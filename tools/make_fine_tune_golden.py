#!/usr/bin/env python3
"""Golden gradients for fine-tuning the checkpoint language models (models/fine_tune.hpp; issue 19).

For each committed tiny checkpoint below, loads it with transformers (the pure-PyTorch path on the CPU, f32), runs
one batch with labels = input_ids (transformers shifts them: position t predicts token t + 1; the mean over the
counted positions) and records in `fine_tune.json` beside the checkpoint: the loss, and for every parameter under
its checkpoint name its element count, its gradient's L2 norm and a spread sample of its gradient (every k-th
element, k = max(1, n // 96)). tests/train/test_fine_tune.cpp checks the library's StackLM gradients against them.

  mamba/tiny       MambaForCausalLM, tied embeddings
  mamba2/heads4    Mamba2ForCausalLM, tied, chunk 8 (the batch's 13 tokens leave a remainder)
  mamba2/groups2   Mamba2ForCausalLM, untied, in_proj / out_proj biases, time_step_limit (clamped steps)

Usage (needs torch, transformers, safetensors; never run in CI):
    /tmp/venv-loader/bin/python tools/make_fine_tune_golden.py [data_dir]
"""
import json
import os
import sys

import torch
import transformers

BATCH = [[1, 17, 42, 99, 3, 120, 64, 7, 31, 5, 88, 2, 250],
         [9, 9, 200, 13, 77, 1, 140, 56, 23, 4, 180, 33, 60]]

MODELS = [("mamba/tiny", transformers.MambaForCausalLM),
          ("mamba2/heads4", transformers.Mamba2ForCausalLM),
          ("mamba2/groups2", transformers.Mamba2ForCausalLM)]


def record(model, vocab):
    ids = torch.tensor([[t % vocab for t in row] for row in BATCH])
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    params = {}
    for name, p in model.named_parameters():
        g = p.grad.detach().reshape(-1).double()
        k = max(1, g.numel() // 96)
        params[name] = {"numel": g.numel(), "norm": float(g.norm()), "stride": k,
                        "sample": [float(v) for v in g[::k]]}
    return {"generator": f"tools/make_fine_tune_golden.py, transformers {transformers.__version__}, "
                         f"torch {torch.__version__}",
            "input_ids": ids.tolist(), "loss": out.loss.item(), "grads": params}


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    torch.manual_seed(0)
    for rel, cls in MODELS:
        path = os.path.join(data, rel)
        model = cls.from_pretrained(path, torch_dtype=torch.float32)
        model.train()  # no dropout in these models; train() only for the record
        rec = record(model, model.config.vocab_size)
        with open(os.path.join(path, "fine_tune.json"), "w") as f:
            json.dump(rec, f, indent=1)
        print(f"{rel}: loss {rec['loss']:.6f}, {len(rec['grads'])} parameters")


if __name__ == "__main__":
    main()
