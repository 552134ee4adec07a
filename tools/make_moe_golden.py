#!/usr/bin/env python3
"""Golden data for the mixture-of-experts load-balancing auxiliary loss.

Writes tests/data/moe/aux_loss.json: the value and the gradient of transformers' load_balancing_loss_func (the
Switch Transformer loss that Mixtral and Jamba add to the language-model loss with weight router_aux_loss_coef),
imported from transformers.models.mixtral.modeling_mixtral (Jamba carries an identical copy; the script falls back
to it if the Mixtral module is missing) for a few small sets of random router logits:

  two_layers   2 layers of [6, 5] logits (batch 2 x sequence 3, flattened), 5 experts, top-2, no mask
  masked       the logits of two_layers with the attention mask [[1, 1, 0], [1, 1, 1]], top-2
  top1         1 layer of [7, 3] logits, top-1, no mask
  top3_of_8    3 layers of [4, 8] logits, top-3, the mask [[1, 0, 1, 1]]

The function pools the rows of all layers: with N the number of counted (layer, token) rows (every row, or those
whose mask entry is 1; the same 2-D mask, flattened batch-major, applies to every layer), f_e the number of counted
rows whose top-k holds expert e divided by N (so the f_e sum to k) and P_e the sum over counted rows of e's softmax
probability (softmax over all experts, no renormalization over the top k) divided by N,
loss = num_experts * sum_e f_e * P_e. The top-k counts are not differentiable, so the gradient flows through P only.

The logits are float64 (torch.randn * SCALE from a fixed seed). The function accumulates in float32 whatever the
input dtype (its sums start from float32 zeros and it casts the probabilities with .float()), so each case records
both what it returns ("loss", and "grad" by autograd through it) and the same formula evaluated in float64 here
("loss_f64", "grad_f64"); the two are asserted to agree to float32 accuracy. A case's seed is bumped until no row
has a gap below MIN_GAP between its k-th and (k+1)-th softmax probability, so the top-k selection is unambiguous.

Each case holds "logits" (a list of layers, each [tokens][experts]), "num_experts", "top_k", "mask" (null or the
[batch][sequence] list), "seed", "loss", "grad", "loss_f64", "grad_f64" (gradients shaped like the logits) and
"min_gap"; the file also records the transformers and torch versions.

Usage (needs torch, transformers; never run in CI):
    /tmp/venv-loader/bin/python tools/make_moe_golden.py [data_dir]
"""
import json
import os
import sys

import torch
import transformers

try:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    SOURCE = "transformers.models.mixtral.modeling_mixtral"
except ImportError:
    from transformers.models.jamba.modeling_jamba import load_balancing_loss_func
    SOURCE = "transformers.models.jamba.modeling_jamba"

SCALE = 1.5
MIN_GAP = 1e-3
# name, first seed, layers, tokens, experts, top_k, mask
CASES = [
    ("two_layers", 101, 2, 6, 5, 2, None),
    ("masked", 101, 2, 6, 5, 2, [[1, 1, 0], [1, 1, 1]]),
    ("top1", 303, 1, 7, 3, 1, None),
    ("top3_of_8", 404, 3, 4, 8, 3, [[1, 0, 1, 1]]),
]


def min_topk_gap(layers, top_k):
    """The smallest gap, over all rows of all layers, between the k-th and (k+1)-th softmax probability."""
    gap = float("inf")
    for logits in layers:
        probs = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
        gap = min(gap, (probs[:, top_k - 1] - probs[:, top_k]).min().item())
    return gap


def make_logits(seed, n_layers, tokens, experts, top_k):
    while True:
        gen = torch.Generator().manual_seed(seed)
        layers = [torch.randn(tokens, experts, generator=gen, dtype=torch.float64) * SCALE for _ in range(n_layers)]
        gap = min_topk_gap(layers, top_k)
        if gap >= MIN_GAP:
            return seed, layers, gap
        seed += 1


def loss_f64(layers, num_experts, top_k, mask):
    """The formula of load_balancing_loss_func, all in float64."""
    counts = torch.zeros(num_experts, dtype=torch.float64)
    prob_sum = torch.zeros(num_experts, dtype=torch.float64)
    rows = 0.0
    for logits in layers:
        w = torch.ones(logits.shape[0], dtype=torch.float64) if mask is None else \
            torch.tensor(mask, dtype=torch.float64).reshape(-1)
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, top_k, dim=-1).indices
        counts = counts + torch.zeros(num_experts, dtype=torch.float64).scatter_add_(
            0, top.reshape(-1), w.repeat_interleave(top_k))
        prob_sum = prob_sum + (probs * w.unsqueeze(-1)).sum(dim=0)
        rows += w.sum().item()
    return num_experts * torch.sum((counts / rows) * (prob_sum / rows))


def value_and_grad(fn, layers):
    leaves = [x.clone().requires_grad_(True) for x in layers]
    loss = fn(tuple(leaves))
    loss.backward()
    return loss.item(), [leaf.grad.tolist() for leaf in leaves]


def max_abs_diff(a, b):
    return (torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)).abs().max().item()


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "moe")
    os.makedirs(data_dir, exist_ok=True)
    out = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "source": SOURCE + ".load_balancing_loss_func",
        "cases": {},
    }
    for name, seed, n_layers, tokens, experts, top_k, mask in CASES:
        seed, layers, gap = make_logits(seed, n_layers, tokens, experts, top_k)
        mask_t = None if mask is None else torch.tensor(mask, dtype=torch.float64)
        if mask is not None:
            assert mask_t.numel() == tokens, name
        loss, grad = value_and_grad(
            lambda xs: load_balancing_loss_func(xs, num_experts=experts, top_k=top_k, attention_mask=mask_t), layers)
        loss64, grad64 = value_and_grad(lambda xs: loss_f64(xs, experts, top_k, mask), layers)
        assert abs(loss - loss64) <= 1e-6 * max(1.0, abs(loss64)), (name, loss, loss64)
        assert max_abs_diff(grad, grad64) <= 1e-6, (name, max_abs_diff(grad, grad64))
        out["cases"][name] = {
            "logits": [x.tolist() for x in layers],
            "num_experts": experts,
            "top_k": top_k,
            "mask": mask,
            "seed": seed,
            "loss": loss,
            "grad": grad,
            "loss_f64": loss64,
            "grad_f64": grad64,
            "min_gap": gap,
        }
        print(f"{name}: seed {seed} loss {loss!r} loss_f64 {loss64!r} min_gap {gap:.4g} "
              f"max|grad - grad_f64| {max_abs_diff(grad, grad64):.3g}")
    path = os.path.join(data_dir, "aux_loss.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
