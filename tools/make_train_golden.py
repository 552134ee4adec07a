#!/usr/bin/env python3
"""Golden data for ssm::train::AdamW: torch.optim.AdamW's parameters after each step.

Writes tests/data/train/adamw.json. Each case is one float64 parameter vector with its hyperparameters (beta1, beta2,
eps, weight_decay), its initial values, and its steps: the learning rate set for that step (as a schedule would set
param_groups[0]["lr"]), the gradient given, and the parameters after torch's step. Gradients are random normal,
some scaled by 1e-4 and 1e3 so that the second moment and epsilon both matter; the cases:

  defaults       lr 1e-3 throughout, weight_decay 0.01, the default betas and eps, 6 steps
  schedule       a learning rate that rises then falls (0.01, 0.02, 0.03, 0.015, 0.005), weight_decay 0.1
  tiny_grads     gradients of ~1e-6 against eps 1e-6, beta2 0.95, no weight decay, 5 steps
  large_decay    weight_decay 0.5, beta1 0.5, lr 0.1, 4 steps

Usage (needs torch; Debian's python3-torch is enough; never run in CI):  /usr/bin/python3 tools/make_train_golden.py
"""
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "train" / "adamw.json"


def case(name, n, lrs, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, grad_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    initial = p.detach().clone().tolist()
    opt = torch.optim.AdamW([p], lr=lrs[0], betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                            foreach=False)
    steps = []
    for i, lr in enumerate(lrs):
        grad = torch.randn(n, generator=g, dtype=torch.float64) * grad_scale
        if i % 3 == 1:
            grad[0] *= 1e-4
            grad[-1] *= 1e3
        opt.param_groups[0]["lr"] = lr
        p.grad = grad.clone()
        opt.step()
        steps.append({"lr": lr, "grad": grad.tolist(), "after": p.detach().clone().tolist()})
    return {"name": name, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay,
            "initial": initial, "steps": steps}


def main():
    cases = [
        case("defaults", 7, [1e-3] * 6, seed=1),
        case("schedule", 5, [0.01, 0.02, 0.03, 0.015, 0.005], weight_decay=0.1, seed=2),
        case("tiny_grads", 4, [1e-2] * 5, beta2=0.95, eps=1e-6, weight_decay=0.0, grad_scale=1e-6, seed=3),
        case("large_decay", 3, [0.1] * 4, beta1=0.5, weight_decay=0.5, seed=4),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
