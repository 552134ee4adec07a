"""Data-parallel training of a small Mamba language model whose selective scan is the ssm library's (ssm.torch),
with torch.distributed's DistributedDataParallel over the gloo backend.

Each process holds a replica of the model and takes its share of every global batch; DDP averages the gradients
across processes after each backward, so after N steps every replica equals one model trained in a single process
on the whole global batch (up to the rounding of the averaged sums).

On one machine, two processes, checked against single-process training:

    python examples/python/ddp_train.py --world-size 2 --steps 5 --check

Across machines, with torchrun on each (the same script; torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT):

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 \\
        examples/python/ddp_train.py --steps 100
"""

from __future__ import annotations

import argparse
import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

import ssm.torch as st


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    """Mamba's mixer (Gu & Dao 2023, Fig. 3): in_proj -> causal depthwise conv -> SiLU -> selective scan gated by
    SiLU(z) -> out_proj; Δ, B, C are projections of the input (x_proj, dt_proj). The scan is ssm.torch's."""

    def __init__(self, d_model: int, d_state: int = 8, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)  # its bias is the scan's delta_bias
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (b, l, d_model)
        l = hidden.shape[1]
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, l) each
        x = F.silu(self.conv1d(x)[..., :l])  # (b, d_inner, l)
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (b, d_inner, l), before bias and softplus
        y = st.selective_scan(x, delta, -torch.exp(self.A_log), B.transpose(1, 2), C.transpose(1, 2), self.D, z,
                              self.dt_proj.bias, delta_softplus=True)  # (b, d_inner, l)
        return self.out_proj(y.transpose(1, 2))


class TinyMambaLM(nn.Module):
    def __init__(self, vocab: int = 64, d_model: int = 32, n_layer: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.norms = nn.ModuleList(RMSNorm(d_model) for _ in range(n_layer))
        self.blocks = nn.ModuleList(MambaBlock(d_model) for _ in range(n_layer))
        self.norm_f = RMSNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (b, l) -> logits (b, l, vocab)
        h = self.embedding(ids)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(norm(h))
        return self.norm_f(h) @ self.embedding.weight.t()  # tied head


def global_batches(steps: int, batch: int, length: int, vocab: int):
    """The same global batches in every process (a fixed seed): random token sequences and their next tokens."""
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        seq = torch.randint(0, vocab, (batch, length + 1), generator=g)
        yield seq[:, :-1], seq[:, 1:]


def train(model: nn.Module, args, rank: int = 0, world: int = 1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    per = args.batch // world
    for step, (ids, targets) in enumerate(global_batches(args.steps, args.batch, args.length, args.vocab)):
        ids, targets = ids[rank * per:(rank + 1) * per], targets[rank * per:(rank + 1) * per]  # this process' share
        loss = F.cross_entropy(model(ids).reshape(-1, args.vocab), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()  # DDP: gradients averaged over the processes here
        opt.step()
        if rank == 0 and args.verbose:
            print(f"step {step}: loss {loss.item():.4f} (rank 0's share)")


def make_model(args) -> nn.Module:
    torch.manual_seed(args.seed)  # the same initial parameters everywhere
    return TinyMambaLM(args.vocab, args.d_model, args.n_layer)


def worker(rank: int, world: int, args, init_method: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(make_model(args))
        train(model, args, rank, world)
        if rank == 0 and result_path:
            torch.save(model.module.state_dict(), result_path)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description="DDP (gloo) training of a tiny Mamba LM on the ssm library's scan")
    ap.add_argument("--world-size", type=int, default=2, help="processes to spawn on this machine")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4, help="global batch (divided among the processes)")
    ap.add_argument("--length", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="compare with single-process training on the global batch")
    ap.add_argument("--tolerance", type=float, default=1e-5)
    ap.add_argument("--out", default="", help="where rank 0 saves the trained parameters (torch.save)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun: one process of many
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args, "env://", args.out)
        return 0

    world = args.world_size
    if args.batch % world:
        ap.error(f"--batch {args.batch} is not divisible by --world-size {world}")
    out = args.out or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ddp_train_{os.getpid()}.pt")
    mp.spawn(worker, args=(world, args, f"tcp://127.0.0.1:{free_port()}", out), nprocs=world, join=True)
    print(f"trained {args.steps} steps in {world} processes (gloo), global batch {args.batch}")
    if not args.check:
        return 0
    torch.set_num_threads(1)
    single = make_model(args)
    train(single, args)
    ddp_params = torch.load(out)
    if not args.out:
        os.remove(out)
    worst = max((ddp_params[k] - v).abs().max().item() for k, v in single.state_dict().items())
    moved = max((v - make_model(args).state_dict()[k]).abs().max().item() for k, v in single.state_dict().items())
    print(f"max |DDP - single process| over the parameters: {worst:.3e} (tolerance {args.tolerance:g}); "
          f"max change from the initial parameters: {moved:.3e}")
    return 0 if worst <= args.tolerance and moved > 100 * args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
