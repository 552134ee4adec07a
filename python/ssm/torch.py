"""PyTorch autograd functions over the library's forward and backward: :func:`selective_scan`, :func:`ssd`,
:func:`linear_attention`, :func:`delta_rule`, :func:`hyena`, :func:`moe`, :func:`rwkv4`, :func:`rwkv7` and
:func:`ttt_linear` take and return torch tensors (CPU), record themselves in the autograd graph, and run the library's
backward when gradients are needed. Tensors are passed to the library without copies (DLPack); results are tensors that
own memory the library allocated.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from . import _ext
from ._arrays import _to_torch

__all__ = ["selective_scan", "ssd", "linear_attention", "delta_rule", "hyena", "moe", "rwkv4", "rwkv7", "ttt_linear"]


def _d(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The tensor without its autograd history (the library reads its memory; DLPack refuses tensors that require
    grad)."""
    return None if t is None else t.detach()


def _c(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A gradient as the backward ops read it (contiguous; most are already)."""
    return None if t is None else t.contiguous()


class SelectiveScanFunction(torch.autograd.Function):
    """Autograd function of the selective scan; see :func:`selective_scan`."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, delta_softplus):
        ctx.set_materialize_grads(False)
        # The forward saves the state every 128 steps so the backward restarts from them (real A, no cu_seqlens).
        save = not A.is_complex() and cu_seqlens is None and u.device.type == "cpu"
        out, last, chunks, _ = _ext.selective_scan(
            _d(u), _d(delta), _d(A), _d(B), _d(C), D=_d(D), z=_d(z), delta_bias=_d(delta_bias),
            delta_softplus=delta_softplus, initial_state=_d(initial_state), cu_seqlens=cu_seqlens,
            return_last_state=True, save_chunk_states=save)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_states = _to_torch(chunks)  # the library's buffer, held until the backward
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
        return _to_torch(out), _to_torch(last)

    @staticmethod
    def backward(ctx, grad_out, grad_last_state):
        u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(u)
        # The backward reads u, delta, z, B and C with unit stride along l (the forward took any): copied only if not.
        grads = _ext.selective_scan_backward(
            _c(_d(u)), _c(_d(delta)), _d(A), _c(_d(B)), _c(_d(C)), _c(grad_out), D=_d(D), z=_c(_d(z)),
            delta_bias=_d(delta_bias),
            delta_softplus=ctx.delta_softplus, initial_state=_d(initial_state), cu_seqlens=cu_seqlens,
            grad_last_state=_c(grad_last_state), chunk_states=ctx.chunk_states)
        return (*(_to_torch(g) for g in grads[:9]), None, None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   initial_state: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                   return_last_state: bool = False):
    """Differentiable selective scan (mamba_ssm's ``selective_scan_fn`` semantics; shapes in
    :func:`ssm.selective_scan`). Gradients flow to u, delta, A, B, C, D, z, delta_bias and initial_state, and from
    both out and the last state. Returns out, or (out, last_state)."""
    out, last = SelectiveScanFunction.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                                            delta_softplus)
    return (out, last) if return_last_state else out


class SsdFunction(torch.autograd.Function):
    """Autograd function of SSD; see :func:`ssd`."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus, dt_limit, chunk_size,
                head_dim):
        ctx.set_materialize_grads(False)
        # When a gradient is wanted, the forward keeps its chunk states and y before the gate (on x's device), so
        # the backward does not recompute them (a third of its work).
        save = any(ctx.needs_input_grad)
        out, final, _, saved = _ext.ssd(
            _d(x), _d(dt), _d(A), _d(B), _d(C), D=_d(D), z=_d(z), dt_bias=_d(dt_bias), dt_softplus=dt_softplus,
            dt_limit=dt_limit, initial_state=_d(initial_state), cu_seqlens=cu_seqlens, return_final_state=True,
            save_for_backward=save, chunk_size=chunk_size, head_dim=head_dim)
        ctx.options = dict(dt_softplus=dt_softplus, dt_limit=dt_limit, chunk_size=chunk_size, head_dim=head_dim)
        ctx.kept = None if saved is None else (_to_torch(saved[0]), _to_torch(saved[1]), saved[2])
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens)
        return _to_torch(out), _to_torch(final)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state):
        x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        states, y, kept_chunk = ctx.kept if ctx.kept is not None else (None, None, 0)
        ctx.kept = None
        grads = _ext.ssd_backward(
            _d(x), _d(dt), _d(A), _d(B), _d(C), _c(grad_out), D=_d(D), z=_d(z), dt_bias=_d(dt_bias),
            initial_state=_d(initial_state), cu_seqlens=cu_seqlens, grad_final_state=_c(grad_final_state),
            saved_states=_d(states), saved_y=_d(y), saved_chunk_size=kept_chunk, **ctx.options)
        return (*(_to_torch(g) for g in grads[:9]), None, None, None, None, None)


def ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
        dt_softplus: bool = False, dt_limit: Optional[Tuple[float, float]] = None,
        initial_state: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
        chunk_size: int = 256, head_dim: int = 0, return_final_state: bool = False):
    """Differentiable SSD (Mamba-2's scan; shapes in :func:`ssm.ssd`). Gradients flow to x, dt, A, B, C, D, z,
    dt_bias and initial_state, from out and the final state. Returns out, or (out, final_state)."""
    out, final = SsdFunction.apply(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens, dt_softplus, dt_limit,
                                   chunk_size, head_dim)
    return (out, final) if return_final_state else out


class LinearAttentionFunction(torch.autograd.Function):
    """Autograd function of linear attention / retention; see :func:`linear_attention`."""

    @staticmethod
    def forward(ctx, q, k, v, log_gate, initial_state, initial_normalizer, cu_seqlens, feature_map, normalize, eps,
                scale, gamma, chunk_size):
        ctx.set_materialize_grads(False)
        ctx.options = dict(feature_map=feature_map, normalize=normalize, eps=eps, scale=scale,
                           gamma=None if gamma is None else list(gamma), chunk_size=chunk_size)
        out, state, normalizer, _ = _ext.linear_attention(
            _d(q), _d(k), _d(v), log_gate=_d(log_gate), initial_state=_d(initial_state),
            initial_normalizer=_d(initial_normalizer), cu_seqlens=cu_seqlens, return_final_state=True, **ctx.options)
        ctx.save_for_backward(q, k, v, log_gate, initial_state, initial_normalizer, cu_seqlens)
        return _to_torch(out), _to_torch(state), _to_torch(normalizer)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state, grad_final_normalizer):
        q, k, v, log_gate, initial_state, initial_normalizer, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        gq, gk, gv, g_state, g_normalizer, g_gate, _ = _ext.linear_attention_backward(
            _d(q), _d(k), _d(v), _c(grad_out), log_gate=_d(log_gate), initial_state=_d(initial_state),
            initial_normalizer=_d(initial_normalizer), cu_seqlens=cu_seqlens,
            grad_final_state=_c(grad_final_state),
            grad_final_normalizer=_c(grad_final_normalizer) if ctx.options["normalize"] else None, **ctx.options)
        grads = (gq, gk, gv, g_gate, g_state, g_normalizer)
        return (*(_to_torch(g) for g in grads), None, None, None, None, None, None, None)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     initial_state: Optional[torch.Tensor] = None,
                     initial_normalizer: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                     feature_map: str = "identity", normalize: bool = False, eps: float = 1e-6, scale: float = 1.0,
                     gamma: Optional[Sequence[float]] = None, chunk_size: int = 64,
                     return_final_state: bool = False, log_gate: Optional[torch.Tensor] = None):
    """Differentiable linear attention / retention / GLA (shapes in :func:`ssm.linear_attention`). Gradients flow
    to q, k, v, the log gate and the initial state and normalizer. Returns out, or (out, final_state,
    final_normalizer)."""
    out, state, normalizer = LinearAttentionFunction.apply(q, k, v, log_gate, initial_state, initial_normalizer,
                                                           cu_seqlens, feature_map, normalize, eps, scale, gamma,
                                                           chunk_size)
    return (out, state, normalizer) if return_final_state else out


class DeltaRuleFunction(torch.autograd.Function):
    """Autograd function of the delta rule (DeltaNet / Gated DeltaNet); see :func:`delta_rule`."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, initial_state, cu_seqlens, l2_normalize, norm_eps, scale, chunk_size):
        ctx.set_materialize_grads(False)
        ctx.options = dict(l2_normalize=l2_normalize, norm_eps=norm_eps, scale=scale, chunk_size=chunk_size)
        out, state, _ = _ext.delta_rule(_d(q), _d(k), _d(v), _d(beta), g=_d(g), initial_state=_d(initial_state),
                                        cu_seqlens=cu_seqlens, return_final_state=True, **ctx.options)
        ctx.save_for_backward(q, k, v, beta, g, initial_state, cu_seqlens)
        return _to_torch(out), _to_torch(state)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state):
        q, k, v, beta, g, initial_state, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        grads = _ext.delta_rule_backward(
            _d(q), _d(k), _d(v), _d(beta), _c(grad_out), g=_d(g), initial_state=_d(initial_state),
            cu_seqlens=cu_seqlens, grad_final_state=_c(grad_final_state), **ctx.options)
        return (*(_to_torch(x) for x in grads[:6]), None, None, None, None, None)


def delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
               g: Optional[torch.Tensor] = None, initial_state: Optional[torch.Tensor] = None,
               cu_seqlens: Optional[torch.Tensor] = None, l2_normalize: bool = True, norm_eps: float = 1e-6,
               scale: float = 1.0, chunk_size: int = 64, return_final_state: bool = False):
    """Differentiable delta rule (shapes in :func:`ssm.delta_rule`). Gradients flow to q, k, v, beta, g and the
    initial state, from out and the final state. Returns out, or (out, final_state)."""
    out, state = DeltaRuleFunction.apply(q, k, v, beta, g, initial_state, cu_seqlens, l2_normalize, norm_eps, scale,
                                         chunk_size)
    return (out, state) if return_final_state else out


class HyenaFunction(torch.autograd.Function):
    """Autograd function of Hyena's gated long convolutions; see :func:`hyena`."""

    @staticmethod
    def forward(ctx, v, h, bias, *x):
        out, _ = _ext.hyena(_d(v), [_d(g) for g in x], _d(h), _d(bias))
        ctx.save_for_backward(v, h, bias, *x)
        return _to_torch(out)

    @staticmethod
    def backward(ctx, grad_out):
        v, h, bias, *x = ctx.saved_tensors
        gv, gx, gh, gb, _ = _ext.hyena_backward(_d(v), [_d(g) for g in x], _d(h), _d(bias), _c(grad_out))
        gx = _to_torch(gx)
        return (_to_torch(gv), _to_torch(gh), _to_torch(gb), *(gx[i] for i in range(len(x))))


def hyena(v: torch.Tensor, x: Sequence[torch.Tensor], h: torch.Tensor, bias: torch.Tensor):
    """Differentiable Hyena recurrence (shapes in :func:`ssm.hyena`): gradients flow to v, every gate, the filters h
    (an implicit filter's parameters train through them) and the skips."""
    return HyenaFunction.apply(v, h, bias, *x)


class MoeFunction(torch.autograd.Function):
    """Autograd function of the mixture of experts; see :func:`moe`."""

    @staticmethod
    def forward(ctx, x, router, w_gate_up, w_down, top_k, normalize_topk, activation):
        ctx.set_materialize_grads(False)
        ctx.options = dict(top_k=top_k, normalize_topk=normalize_topk, activation=activation)
        out, logits, _ = _ext.moe(_d(x), _d(router), _d(w_gate_up), _d(w_down), **ctx.options)
        ctx.save_for_backward(x, router, w_gate_up, w_down)
        return _to_torch(out), _to_torch(logits)

    @staticmethod
    def backward(ctx, grad_out, grad_router_logits):
        x, router, w_gate_up, w_down = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        grads = _ext.moe_backward(_d(x), _d(router), _d(w_gate_up), _d(w_down), _c(grad_out),
                                  grad_router_logits=_c(grad_router_logits), **ctx.options)
        return (*(_to_torch(g) for g in grads[:4]), None, None, None)


def moe(x: torch.Tensor, router: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, top_k: int = 2,
        normalize_topk: bool = False, activation: str = "silu", return_router_logits: bool = False):
    """Differentiable mixture of SwiGLU experts (shapes in :func:`ssm.moe`; the weights in x's dtype). Gradients flow
    to x, the router and every expert, from out and from the router logits (so a load-balancing loss computed on them
    trains the router). Returns out, or (out, router_logits)."""
    out, logits = MoeFunction.apply(x, router, w_gate_up, w_down, top_k, normalize_topk, activation)
    return (out, logits) if return_router_logits else out


class Rwkv4Function(torch.autograd.Function):
    """Autograd function of RWKV-4's WKV recurrence; see :func:`rwkv4`."""

    @staticmethod
    def forward(ctx, k, v, time_decay, time_first, initial_state, cu_seqlens, checkpoint):
        ctx.set_materialize_grads(False)
        ctx.options = dict(checkpoint=checkpoint)
        out, state, _ = _ext.rwkv4(_d(k), _d(v), _d(time_decay), _d(time_first), initial_state=_d(initial_state),
                                   cu_seqlens=cu_seqlens, return_final_state=True, **ctx.options)
        ctx.save_for_backward(k, v, time_decay, time_first, initial_state, cu_seqlens)
        return _to_torch(out), _to_torch(state)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state):
        k, v, time_decay, time_first, initial_state, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(k)
        grads = _ext.rwkv4_backward(
            _d(k), _d(v), _d(time_decay), _d(time_first), _c(grad_out), initial_state=_d(initial_state),
            cu_seqlens=cu_seqlens, grad_final_state=_c(grad_final_state), **ctx.options)
        return (*(_to_torch(x) for x in grads[:5]), None, None)


def rwkv4(k: torch.Tensor, v: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor,
          initial_state: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
          checkpoint: int = 64, return_final_state: bool = False):
    """Differentiable RWKV-4 WKV recurrence (shapes in :func:`ssm.rwkv4`). Gradients flow to k, v, time_decay,
    time_first and the initial state, from out and the final state. Returns out, or (out, final_state)."""
    out, state = Rwkv4Function.apply(k, v, time_decay, time_first, initial_state, cu_seqlens, checkpoint)
    return (out, state) if return_final_state else out


class Rwkv7Function(torch.autograd.Function):
    """Autograd function of RWKV-7's generalized delta rule; see :func:`rwkv7`."""

    @staticmethod
    def forward(ctx, q, k, v, log_w, a, b, initial_state, cu_seqlens, scale, chunk_size):
        ctx.set_materialize_grads(False)
        ctx.options = dict(scale=scale, chunk_size=chunk_size)
        out, state, _ = _ext.rwkv7(_d(q), _d(k), _d(v), _d(log_w), _d(a), _d(b), initial_state=_d(initial_state),
                                   cu_seqlens=cu_seqlens, return_final_state=True, **ctx.options)
        ctx.save_for_backward(q, k, v, log_w, a, b, initial_state, cu_seqlens)
        return _to_torch(out), _to_torch(state)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state):
        q, k, v, log_w, a, b, initial_state, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        grads = _ext.rwkv7_backward(
            _d(q), _d(k), _d(v), _d(log_w), _d(a), _d(b), _c(grad_out), initial_state=_d(initial_state),
            cu_seqlens=cu_seqlens, grad_final_state=_c(grad_final_state), **ctx.options)
        return (*(_to_torch(x) for x in grads[:7]), None, None, None)


def rwkv7(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
          initial_state: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None, scale: float = 1.0,
          chunk_size: int = 32, return_final_state: bool = False):
    """Differentiable RWKV-7 generalized delta rule (shapes in :func:`ssm.rwkv7`). Gradients flow to q, k, v, log_w,
    a, b and the initial state, from out and the final state. Returns out, or (out, final_state)."""
    out, state = Rwkv7Function.apply(q, k, v, log_w, a, b, initial_state, cu_seqlens, scale, chunk_size)
    return (out, state) if return_final_state else out


class TttLinearFunction(torch.autograd.Function):
    """Autograd function of TTT-Linear; see :func:`ttt_linear`."""

    @staticmethod
    def forward(ctx, q, k, v, eta, ln_weight, ln_bias, position_weights, initial_state, initial_pending, cu_seqlens,
                mini_batch_size, start):
        ctx.set_materialize_grads(False)
        ctx.options = dict(mini_batch_size=mini_batch_size, start=start)
        out, state, pending, _ = _ext.ttt_linear(
            _d(q), _d(k), _d(v), _d(eta), _d(ln_weight), _d(ln_bias), position_weights=_d(position_weights),
            initial_state=_d(initial_state), initial_pending=_d(initial_pending), cu_seqlens=cu_seqlens,
            return_final_state=True, **ctx.options)
        ctx.save_for_backward(q, k, v, eta, ln_weight, ln_bias, position_weights, initial_state, initial_pending,
                              cu_seqlens)
        return _to_torch(out), _to_torch(state), _to_torch(pending)

    @staticmethod
    def backward(ctx, grad_out, grad_final_state, grad_final_pending):
        q, k, v, eta, ln_weight, ln_bias, tau, s0, a0, cu_seqlens = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        grads = _ext.ttt_linear_backward(
            _d(q), _d(k), _d(v), _d(eta), _d(ln_weight), _d(ln_bias), _c(grad_out), position_weights=_d(tau),
            initial_state=_d(s0), initial_pending=_d(a0), cu_seqlens=cu_seqlens,
            grad_final_state=_c(grad_final_state), grad_final_pending=_c(grad_final_pending), **ctx.options)
        return (*(_to_torch(x) for x in grads[:9]), None, None, None)


def ttt_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor, ln_weight: torch.Tensor,
               ln_bias: torch.Tensor, position_weights: Optional[torch.Tensor] = None,
               initial_state: Optional[torch.Tensor] = None, initial_pending: Optional[torch.Tensor] = None,
               cu_seqlens: Optional[torch.Tensor] = None, mini_batch_size: int = 16, start: int = 0,
               return_final_state: bool = False):
    """Differentiable TTT-Linear (shapes in :func:`ssm.ttt_linear`). Gradients flow to q, k, v, eta, ln_weight,
    ln_bias, the position weights and the initial state and pending sum, from out and the final state and pending sum.
    Returns out, or (out, final_state, final_pending)."""
    out, state, pending = TttLinearFunction.apply(q, k, v, eta, ln_weight, ln_bias, position_weights, initial_state,
                                                  initial_pending, cu_seqlens, mini_batch_size, start)
    return (out, state, pending) if return_final_state else out
