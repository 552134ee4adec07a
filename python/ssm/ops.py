"""The library's ops on NumPy arrays and PyTorch tensors (no autograd here: see :mod:`ssm.torch`).

Every array argument is read in place through DLPack or the buffer protocol, whatever its framework; results are
arrays of the first argument's framework (PyTorch for a torch.Tensor, NumPy otherwise) owning memory the library
allocated. Shapes, dtypes, strides and devices are checked by the library: a violation raises :class:`ssm.Error`
naming the operation and the argument. The ``path`` options choose an implementation (``"reference"`` is the plain
loop in double, the oracle the fast paths are tested against).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from . import _ext
from ._arrays import converter

Array = Any  # an object with __dlpack__ or the buffer protocol: numpy.ndarray, torch.Tensor, jax.Array, ...


def selective_scan(u: Array, delta: Array, A: Array, B: Array, C: Array, D: Optional[Array] = None,
                   z: Optional[Array] = None, delta_bias: Optional[Array] = None, delta_softplus: bool = False,
                   initial_state: Optional[Array] = None, cu_seqlens: Optional[Array] = None, *,
                   return_last_state: bool = False, path: str = "automatic", num_threads: int = 0) -> Any:
    """Mamba's selective scan (S6), with the semantics of mamba_ssm's ``selective_scan_ref``.

    ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t · h_t + D u_t``, ``out_t = y_t · silu(z_t)``, with
    ``Δ = softplus(delta + delta_bias)`` when ``delta_softplus``.

    Shapes: u, delta, z (b, d, l); A (d, n) real or complex; B, C (b, g, n, l), (b, n, l) or fixed (d, n); D,
    delta_bias (d); initial_state (b, d, n) (with cu_seqlens (n_seqs, d, n)); cu_seqlens (n_seqs + 1) int32/int64
    packs variable-length sequences along l (then b = 1). Dtypes: u f32/f64/f16/bf16; A, D, delta_bias and the
    state f32 (f64 for f64 u). Paths: "automatic", "reference", "sequential", "chunked".

    Returns out (b, d, l), or (out, last_state) with ``return_last_state``.
    """
    out, last, _, _ = _ext.selective_scan(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, cu_seqlens=cu_seqlens, return_last_state=return_last_state, path=path,
        num_threads=num_threads)
    conv = converter(u)
    return (conv(out), conv(last)) if return_last_state else conv(out)


def selective_scan_backward(u: Array, delta: Array, A: Array, B: Array, C: Array, grad_out: Array,
                            D: Optional[Array] = None, z: Optional[Array] = None, delta_bias: Optional[Array] = None,
                            delta_softplus: bool = False, initial_state: Optional[Array] = None,
                            cu_seqlens: Optional[Array] = None, grad_last_state: Optional[Array] = None, *,
                            path: str = "automatic", num_threads: int = 0) -> dict:
    """Gradients of :func:`selective_scan` for ``grad_out`` (b, d, l, unit stride along l) and the optional
    ``grad_last_state``. Returns a dict ``{"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"}``
    of gradients shaped like their inputs (None where the input was None)."""
    *grads, _ = _ext.selective_scan_backward(
        u, delta, A, B, C, grad_out, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, cu_seqlens=cu_seqlens, grad_last_state=grad_last_state, path=path,
        num_threads=num_threads)
    conv = converter(u)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
    return {name: conv(g) for name, g in zip(names, grads)}


def ssd(x: Array, dt: Array, A: Array, B: Array, C: Array, D: Optional[Array] = None, z: Optional[Array] = None,
        dt_bias: Optional[Array] = None, dt_softplus: bool = False,
        dt_limit: Optional[Tuple[float, float]] = None, initial_state: Optional[Array] = None,
        cu_seqlens: Optional[Array] = None, *, return_final_state: bool = False, chunk_size: int = 256,
        head_dim: int = 0, path: str = "automatic", threads: int = 0) -> Any:
    """SSD, Mamba-2's scan (a scalar decay per head), computed in chunks.

    ``h_t = exp(Δ_t A_h) h_{t-1} + Δ_t x_t B_tᵀ``, ``y_t = h_t C_t + D x_t``, ``out_t = y_t · silu(z_t)``, with
    ``Δ = softplus(dt + dt_bias)`` when ``dt_softplus``, clamped to ``dt_limit``.

    Shapes: x, z (b, l, h, p) (or (b, l, h·p) with ``head_dim = p``); dt (b, l, h); A (h); B, C (b, l, g, n), g
    dividing h; D (h) or (h, p); dt_bias (h); initial_state (b, h, p, n). Dtypes: x, B, C, z f32/f64/f16/bf16; dt, A,
    D, dt_bias and the states f32 (f64 for f64 x), contiguous. Paths: "automatic", "reference", "chunked",
    "recurrent".

    Returns out (x's shape), or (out, final_state) with ``return_final_state``.
    """
    out, final, _, _ = _ext.ssd(
        x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
        initial_state=initial_state, cu_seqlens=cu_seqlens, return_final_state=return_final_state,
        chunk_size=chunk_size, head_dim=head_dim, path=path, threads=threads)
    conv = converter(x)
    return (conv(out), conv(final)) if return_final_state else conv(out)


def ssd_backward(x: Array, dt: Array, A: Array, B: Array, C: Array, grad_out: Array, D: Optional[Array] = None,
                 z: Optional[Array] = None, dt_bias: Optional[Array] = None, dt_softplus: bool = False,
                 dt_limit: Optional[Tuple[float, float]] = None, initial_state: Optional[Array] = None,
                 cu_seqlens: Optional[Array] = None, grad_final_state: Optional[Array] = None, *,
                 chunk_size: int = 256, head_dim: int = 0, path: str = "automatic", threads: int = 0) -> dict:
    """Gradients of :func:`ssd` for ``grad_out`` (x's shape, contiguous) and the optional ``grad_final_state``.
    Returns a dict ``{"x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state"}``."""
    *grads, _ = _ext.ssd_backward(
        x, dt, A, B, C, grad_out, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
        initial_state=initial_state, cu_seqlens=cu_seqlens, grad_final_state=grad_final_state,
        chunk_size=chunk_size, head_dim=head_dim, path=path, threads=threads)
    conv = converter(x)
    names = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")
    return {name: conv(g) for name, g in zip(names, grads)}


def linear_attention(q: Array, k: Array, v: Array, initial_state: Optional[Array] = None,
                     initial_normalizer: Optional[Array] = None, cu_seqlens: Optional[Array] = None, *,
                     log_gate: Optional[Array] = None, feature_map: str = "identity", normalize: bool = False,
                     eps: float = 1e-6, scale: float = 1.0, gamma: Optional[Sequence[float]] = None,
                     return_final_state: bool = False, chunk_size: int = 64, path: str = "automatic",
                     threads: int = 0) -> Any:
    """Linear attention (Katharopoulos et al. 2020), RetNet retention (a fixed decay ``gamma`` per head) and GLA
    (Yang et al. 2024: a data-dependent ``log_gate`` per head, step and key channel).

    ``S_t = diag(α_t) S_{t-1} + φ(k_t) v_tᵀ`` with ``α_t = γ exp(log_gate_t)``, ``y_t = S_tᵀ q̃_t`` (divided by
    ``z_tᵀ q̃_t + eps`` with ``normalize``), ``q̃ = scale · φ(q)``, φ = ``feature_map`` ("identity" or
    "elu_plus_one").

    Shapes: q, k (b, l, g, dk); v (b, l, h, dv), g dividing h; log_gate (b, l, h, dk), every value finite and <= 0;
    initial_state (b, h, dk, dv); initial_normalizer (b, h, dk). Paths: "automatic", "reference", "chunked",
    "recurrent".

    Returns out (v's shape), or (out, final_state, final_normalizer) with ``return_final_state``.
    """
    out, state, normalizer, _ = _ext.linear_attention(
        q, k, v, log_gate=log_gate, initial_state=initial_state, initial_normalizer=initial_normalizer,
        cu_seqlens=cu_seqlens, feature_map=feature_map, normalize=normalize, eps=eps, scale=scale,
        gamma=None if gamma is None else list(gamma), return_final_state=return_final_state,
        chunk_size=chunk_size, path=path, threads=threads)
    conv = converter(q)
    return (conv(out), conv(state), conv(normalizer)) if return_final_state else conv(out)


def linear_attention_backward(q: Array, k: Array, v: Array, grad_out: Array, initial_state: Optional[Array] = None,
                              initial_normalizer: Optional[Array] = None, cu_seqlens: Optional[Array] = None,
                              grad_final_state: Optional[Array] = None,
                              grad_final_normalizer: Optional[Array] = None, *, log_gate: Optional[Array] = None,
                              feature_map: str = "identity", normalize: bool = False, eps: float = 1e-6,
                              scale: float = 1.0, gamma: Optional[Sequence[float]] = None, chunk_size: int = 64,
                              path: str = "automatic", threads: int = 0) -> dict:
    """Gradients of :func:`linear_attention`. Returns a dict ``{"q", "k", "v", "initial_state",
    "initial_normalizer", "log_gate"}`` (None for what was not given)."""
    *grads, _ = _ext.linear_attention_backward(
        q, k, v, grad_out, log_gate=log_gate, initial_state=initial_state, initial_normalizer=initial_normalizer,
        cu_seqlens=cu_seqlens, grad_final_state=grad_final_state, grad_final_normalizer=grad_final_normalizer,
        feature_map=feature_map, normalize=normalize, eps=eps, scale=scale,
        gamma=None if gamma is None else list(gamma), chunk_size=chunk_size, path=path, threads=threads)
    conv = converter(q)
    names = ("q", "k", "v", "initial_state", "initial_normalizer", "log_gate")
    return {name: conv(g) for name, g in zip(names, grads)}


def delta_rule(q: Array, k: Array, v: Array, beta: Array, g: Optional[Array] = None,
               initial_state: Optional[Array] = None, cu_seqlens: Optional[Array] = None, *,
               l2_normalize: bool = True, norm_eps: float = 1e-6, scale: float = 1.0,
               return_final_state: bool = False, chunk_size: int = 64, path: str = "automatic",
               threads: int = 0) -> Any:
    """The delta rule (DeltaNet; with ``g``, Gated DeltaNet), per head:
    ``S_t = α_t (I − β_t k̂_t k̂_tᵀ) S_{t−1} + β_t k̂_t v_tᵀ``, ``o_t = S_tᵀ q̂_t``, with ``α_t = exp(g_t)`` (1 without g)
    and, by default, ``q̂ = scale · q / |q|``, ``k̂ = k / |k|`` (L2 normalization with ``norm_eps``).

    Shapes: q, k (b, l, g, dk); v (b, l, h, dv), g dividing h; beta (b, l, h) in (0, 2]; g (b, l, h) finite and
    <= 0; initial_state (b, h, dk, dv). Paths: "automatic", "reference", "chunked", "recurrent".

    Returns out (v's shape), or (out, final_state) with ``return_final_state``.
    """
    out, state, _ = _ext.delta_rule(q, k, v, beta, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens,
                                    l2_normalize=l2_normalize, norm_eps=norm_eps, scale=scale,
                                    return_final_state=return_final_state, chunk_size=chunk_size, path=path,
                                    threads=threads)
    conv = converter(q)
    return (conv(out), conv(state)) if return_final_state else conv(out)


def delta_rule_backward(q: Array, k: Array, v: Array, beta: Array, grad_out: Array, g: Optional[Array] = None,
                        initial_state: Optional[Array] = None, cu_seqlens: Optional[Array] = None,
                        grad_final_state: Optional[Array] = None, *, l2_normalize: bool = True,
                        norm_eps: float = 1e-6, scale: float = 1.0, chunk_size: int = 64, path: str = "automatic",
                        threads: int = 0) -> dict:
    """Gradients of :func:`delta_rule`. Returns a dict ``{"q", "k", "v", "beta", "g", "initial_state"}`` (None for
    absent inputs)."""
    *grads, _ = _ext.delta_rule_backward(
        q, k, v, beta, grad_out, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens,
        grad_final_state=grad_final_state, l2_normalize=l2_normalize, norm_eps=norm_eps, scale=scale,
        chunk_size=chunk_size, path=path, threads=threads)
    conv = converter(q)
    names = ("q", "k", "v", "beta", "g", "initial_state")
    return {name: conv(gr) for name, gr in zip(names, grads)}


def hyena(v: Array, x: Sequence[Array], h: Array, bias: Array, *, path: str = "automatic", threads: int = 0) -> Any:
    """Hyena's gated long convolutions (Poli et al. 2023) of order N = len(x): ``w = v``; for o = 0 … N − 2:
    ``w' = w ⊙ x[N − 1 − o]``, ``w = h[o] ∗ w' + bias[o] ⊙ w'`` (a causal convolution per channel); ``y = w ⊙ x[0]``.
    Order 2 is ``x0 ⊙ (h ∗ (x1 ⊙ v) + D ⊙ (x1 ⊙ v))``.

    Shapes: v and every gate (b, l, d) f32/f64 (unit stride along d: column slices of one projection are fine); h
    (N − 1, d, L) with L ≥ l; bias (N − 1, d). Paths: "automatic" (= "fft"), "reference" (direct sums in double).
    Returns y (b, l, d).
    """
    out, _ = _ext.hyena(v, list(x), h, bias, path=path, threads=threads)
    return converter(v)(out)


def hyena_backward(v: Array, x: Sequence[Array], h: Array, bias: Array, grad_out: Array, *, path: str = "automatic",
                   threads: int = 0) -> dict:
    """Gradients of :func:`hyena` for ``grad_out`` (b, l, d), contiguous. Returns a dict ``{"v", "x", "h", "bias"}``
    with "x" the gates' gradients stacked (N, b, l, d)."""
    *grads, _ = _ext.hyena_backward(v, list(x), h, bias, grad_out, path=path, threads=threads)
    conv = converter(v)
    return {name: conv(gr) for name, gr in zip(("v", "x", "h", "bias"), grads)}


def moe(x: Array, router: Array, w_gate_up: Array, w_down: Array, *, top_k: int = 2, normalize_topk: bool = False,
        activation: str = "silu", return_router_logits: bool = False, path: str = "automatic", threads: int = 0) -> Any:
    """Sparse mixture of SwiGLU experts (Mixtral, Jamba): per token, ``p = softmax(router x)`` over all E experts, the
    ``top_k`` largest (ties to the lower index) weighted by their probability, divided by the chosen ones' sum when
    ``normalize_topk`` (Mixtral; Jamba does not), and ``y = Σ_j w_j down_j(act(gate_j x) ⊙ up_j x)``.

    Shapes: x (t, H) f32/f64 (unit stride along H); router (E, H); w_gate_up (E, 2I, H) with the gate rows first
    (transformers' fused gate_up_proj); w_down (E, H, I); the weights contiguous, in x's dtype or f16/bf16 for f32 x.
    activation: "silu" (SwiGLU), "gelu" or "gelu_tanh". Paths: "automatic" (= "grouped": tokens grouped by expert,
    two GEMMs per expert), "reference" (loops in double).

    Returns out (t, H), or (out, router_logits (t, E)) with ``return_router_logits`` (for the load-balancing loss).
    """
    out, logits, _ = _ext.moe(x, router, w_gate_up, w_down, top_k=top_k, normalize_topk=normalize_topk,
                              activation=activation, path=path, threads=threads)
    conv = converter(x)
    return (conv(out), conv(logits)) if return_router_logits else conv(out)


def moe_backward(x: Array, router: Array, w_gate_up: Array, w_down: Array, grad_out: Array,
                 grad_router_logits: Optional[Array] = None, *, top_k: int = 2, normalize_topk: bool = False,
                 activation: str = "silu", path: str = "automatic", threads: int = 0) -> dict:
    """Gradients of :func:`moe` for ``grad_out`` (t, H) and an optional ``grad_router_logits`` (t, E) (the
    load-balancing loss's, times its coefficient). The weights must be in x's dtype. Returns a dict ``{"x", "router",
    "w_gate_up", "w_down"}``."""
    *grads, _ = _ext.moe_backward(x, router, w_gate_up, w_down, grad_out, grad_router_logits=grad_router_logits,
                                  top_k=top_k, normalize_topk=normalize_topk, activation=activation, path=path,
                                  threads=threads)
    conv = converter(x)
    return {name: conv(gr) for name, gr in zip(("x", "router", "w_gate_up", "w_down"), grads)}


def moe_load_balancing_loss(router_logits: Sequence[Array], top_k: int, mask: Optional[Array] = None, *,
                            return_grad: bool = False) -> Any:
    """The load-balancing auxiliary loss of Switch Transformer / Mixtral / Jamba (transformers'
    ``load_balancing_loss_func``), pooled over every MoE layer: ``E Σ_j Σ_e f[j, e] P[e]``, with ``f[j, e]`` the
    fraction of tokens whose j-th choice is expert e and ``P[e]`` their mean router probability (``top_k`` when the
    routing is perfectly balanced).

    router_logits: one (t, E) array per MoE layer (f32/f64); mask (t): per-token weights (1 real, 0 padding), the
    flattened attention mask. Returns the loss (a float), or (loss, grad) with ``return_grad``: d loss / d logits as
    one (layers · t, E) f64 array, the routing fractions held constant.
    """
    loss, grad = _ext.moe_load_balancing_loss(list(router_logits), top_k, mask=mask, with_grad=return_grad)
    if not return_grad:
        return loss
    first = router_logits[0] if len(router_logits) else None
    return loss, (converter(first)(grad) if first is not None else None)


def rwkv4(k: Array, v: Array, time_decay: Array, time_first: Array, initial_state: Optional[Array] = None,
          cu_seqlens: Optional[Array] = None, *, return_final_state: bool = False, checkpoint: int = 64,
          path: str = "automatic", threads: int = 0) -> Any:
    """RWKV-4's WKV recurrence, per channel, with ``w = −exp(time_decay)`` and ``u = time_first``:
    ``wkv_t = (Σ_{i<t} e^{(t−1−i) w + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{(t−1−i) w + k_i} + e^{u + k_t})``,
    computed on the scaled state (num, den, max) of transformers' ``rwkv_linear_attention_cpu``, so that nothing
    overflows.

    Shapes: k, v (b, l, c) f32/f64/f16/bf16; time_decay, time_first (c), finite; initial_state (b, 3, c) (with
    cu_seqlens (n_seqs, 3, c)): num, den (>= 0), max, finite; absent it is the empty state (0, 0, −1e38).
    time_decay, time_first and the states are f32 (f64 for f64 k), contiguous. Paths: "automatic" (= "recurrent"),
    "reference", "recurrent". ``checkpoint`` is the backward's interval between saved states.

    Returns out (k's shape), or (out, final_state) with ``return_final_state``.
    """
    out, state, _ = _ext.rwkv4(k, v, time_decay, time_first, initial_state=initial_state, cu_seqlens=cu_seqlens,
                               return_final_state=return_final_state, checkpoint=checkpoint, path=path,
                               threads=threads)
    conv = converter(k)
    return (conv(out), conv(state)) if return_final_state else conv(out)


def rwkv4_backward(k: Array, v: Array, time_decay: Array, time_first: Array, grad_out: Array,
                   initial_state: Optional[Array] = None, cu_seqlens: Optional[Array] = None,
                   grad_final_state: Optional[Array] = None, *, checkpoint: int = 64, path: str = "automatic",
                   threads: int = 0) -> dict:
    """Gradients of :func:`rwkv4` for ``grad_out`` (k's shape, contiguous) and the optional ``grad_final_state``.
    Returns a dict ``{"k", "v", "time_decay", "time_first", "initial_state"}`` (None for an absent initial state)."""
    *grads, _ = _ext.rwkv4_backward(
        k, v, time_decay, time_first, grad_out, initial_state=initial_state, cu_seqlens=cu_seqlens,
        grad_final_state=grad_final_state, checkpoint=checkpoint, path=path, threads=threads)
    conv = converter(k)
    names = ("k", "v", "time_decay", "time_first", "initial_state")
    return {name: conv(gr) for name, gr in zip(names, grads)}


def rwkv7(q: Array, k: Array, v: Array, log_w: Array, a: Array, b: Array, initial_state: Optional[Array] = None,
          cu_seqlens: Optional[Array] = None, *, scale: float = 1.0, return_final_state: bool = False,
          chunk_size: int = 32, path: str = "automatic", threads: int = 0) -> Any:
    """RWKV-7's generalized delta rule, per head with a state S (dk, dv):
    ``S_t = (diag(w_t) + b_t a_tᵀ) S_{t−1} + k_t v_tᵀ``, ``w_t = exp(log_w_t)``, ``o_t = S_tᵀ (scale q_t)``.
    RWKV-7 passes q = r (the receptance), a = −κ̂ and b = κ̂ ⊙ a_icl.

    Shapes: q, k, log_w, a, b (b, l, h, dk); v (b, l, h, dv); log_w finite and <= 0, a and b finite; initial_state
    (b, h, dk, dv). Paths: "automatic" (= "chunked"), "reference", "chunked", "recurrent". ``chunk_size`` is the
    chunked forward's chunk and the backward's checkpoint interval (the backward is a token loop on every path but
    "reference").

    Returns out (v's shape), or (out, final_state) with ``return_final_state``.
    """
    out, state, _ = _ext.rwkv7(q, k, v, log_w, a, b, initial_state=initial_state, cu_seqlens=cu_seqlens, scale=scale,
                               return_final_state=return_final_state, chunk_size=chunk_size, path=path,
                               threads=threads)
    conv = converter(q)
    return (conv(out), conv(state)) if return_final_state else conv(out)


def rwkv7_backward(q: Array, k: Array, v: Array, log_w: Array, a: Array, b: Array, grad_out: Array,
                   initial_state: Optional[Array] = None, cu_seqlens: Optional[Array] = None,
                   grad_final_state: Optional[Array] = None, *, scale: float = 1.0, chunk_size: int = 32,
                   path: str = "automatic", threads: int = 0) -> dict:
    """Gradients of :func:`rwkv7`. Returns a dict ``{"q", "k", "v", "log_w", "a", "b", "initial_state"}`` (None for
    an absent initial state)."""
    *grads, _ = _ext.rwkv7_backward(
        q, k, v, log_w, a, b, grad_out, initial_state=initial_state, cu_seqlens=cu_seqlens,
        grad_final_state=grad_final_state, scale=scale, chunk_size=chunk_size, path=path, threads=threads)
    conv = converter(q)
    names = ("q", "k", "v", "log_w", "a", "b", "initial_state")
    return {name: conv(gr) for name, gr in zip(names, grads)}


def ttt_linear(q: Array, k: Array, v: Array, eta: Array, ln_weight: Array, ln_bias: Array,
               position_weights: Optional[Array] = None, initial_state: Optional[Array] = None,
               initial_pending: Optional[Array] = None, cu_seqlens: Optional[Array] = None, *,
               mini_batch_size: int = 16, start: int = 0, ln_eps: float = 1e-6, return_final_state: bool = False,
               path: str = "automatic", threads: int = 0) -> Any:
    """TTT-Linear (Sun et al. 2024): per head the state is a linear model Ŵ = [W; bᵀ] (d + 1, d), trained while the
    sequence is read by mini-batch gradient descent on ``½‖LN(k̂ᵀŴ) − (v − k)‖²`` (every gradient of a mini-batch at
    its starting weights Ŵ′), and applied to the test view: ``o_t = q_t + LN(q̂_tᵀ Ŵ_t)`` with
    ``Ŵ_t = Ŵ′ − τ_i Σ_{s<=t} η_s ∇ℓ_s(Ŵ′)``, i the token's position in its mini-batch.

    Shapes: q, k, v (b, l, h, d); eta (b, l, h), finite and >= 0; ln_weight, ln_bias (h, d); position_weights τ
    (mini_batch_size,), finite and >= 0 (absent: 1; the paper's code uses 1 / (i + 1)); initial_state Ŵ′ and
    initial_pending A (b, h, d + 1, d). ``start`` is the mini-batch position of each sequence's first token. Paths:
    "automatic" (= "dual"), "dual", "recurrent", "reference"; :func:`ttt_linear_backward` has the gradients.

    Returns out (v's shape), or (out, final_state, final_pending) with ``return_final_state``: the weights at the start
    of the unfinished mini-batch and the gradient sum pending in it, from which a continuation with
    ``start = l % mini_batch_size`` picks up exactly.
    """
    out, state, pending, _ = _ext.ttt_linear(
        q, k, v, eta, ln_weight, ln_bias, position_weights=position_weights, initial_state=initial_state,
        initial_pending=initial_pending, cu_seqlens=cu_seqlens, mini_batch_size=mini_batch_size, start=start,
        ln_eps=ln_eps, return_final_state=return_final_state, path=path, threads=threads)
    conv = converter(q)
    return (conv(out), conv(state), conv(pending)) if return_final_state else conv(out)


def ttt_linear_backward(q: Array, k: Array, v: Array, eta: Array, ln_weight: Array, ln_bias: Array, grad_out: Array,
                        position_weights: Optional[Array] = None, initial_state: Optional[Array] = None,
                        initial_pending: Optional[Array] = None, cu_seqlens: Optional[Array] = None,
                        grad_final_state: Optional[Array] = None, grad_final_pending: Optional[Array] = None, *,
                        mini_batch_size: int = 16, start: int = 0, ln_eps: float = 1e-6, path: str = "automatic",
                        threads: int = 0) -> dict:
    """Gradients of :func:`ttt_linear`. Returns a dict ``{"q", "k", "v", "eta", "ln_weight", "ln_bias",
    "position_weights", "initial_state", "initial_pending"}`` (None for an absent optional input)."""
    *grads, _ = _ext.ttt_linear_backward(
        q, k, v, eta, ln_weight, ln_bias, grad_out, position_weights=position_weights, initial_state=initial_state,
        initial_pending=initial_pending, cu_seqlens=cu_seqlens, grad_final_state=grad_final_state,
        grad_final_pending=grad_final_pending, mini_batch_size=mini_batch_size, start=start, ln_eps=ln_eps, path=path,
        threads=threads)
    conv = converter(q)
    names = ("q", "k", "v", "eta", "ln_weight", "ln_bias", "position_weights", "initial_state", "initial_pending")
    return {name: conv(gr) for name, gr in zip(names, grads)}


def causal_conv1d(x: Array, weight: Array, bias: Optional[Array] = None, initial_state: Optional[Array] = None, *,
                  silu: bool = True, return_final_state: bool = False) -> Any:
    """Causal depthwise conv1d of the Mamba block: ``out_t = act(bias + Σ_k weight[:, k] x_{t-w+1+k})``.

    x (b, d, l) f32/f64 with unit stride along l; weight (d, w); bias (d); initial_state (b, d, w - 1): the inputs
    before t = 0. Returns out (b, d, l), or (out, final_state) with ``return_final_state``."""
    out, final, _ = _ext.causal_conv1d(x, weight, bias=bias, initial_state=initial_state, silu=silu)
    conv = converter(x)
    return (conv(out), conv(final)) if return_final_state else conv(out)


def causal_conv1d_backward(x: Array, weight: Array, grad_out: Array, bias: Optional[Array] = None,
                           initial_state: Optional[Array] = None, grad_final_state: Optional[Array] = None, *,
                           silu: bool = True) -> dict:
    """Gradients of :func:`causal_conv1d`. Returns a dict ``{"x", "weight", "bias", "initial_state"}``."""
    grads = _ext.causal_conv1d_backward(x, weight, grad_out, bias=bias, initial_state=initial_state,
                                        grad_final_state=grad_final_state, silu=silu)
    conv = converter(x)
    return {name: conv(g) for name, g in zip(("x", "weight", "bias", "initial_state"), grads)}


def attention(q: Array, k: Array, v: Array, *, causal: bool = True, scale: float = 0.0, algorithm: str = "tiled",
              n_threads: int = 0, return_lse: bool = False) -> Any:
    """Scaled dot-product attention ``softmax(q kᵀ · scale + mask) v`` (scale 0: 1/sqrt(p)).

    q (b, l_q, h, p); k, v (b, l_k, h_kv, p), h_kv dividing h (grouped queries); f32/f64. Returns out
    (b, l_q, h, p), or (out, lse) with ``return_lse`` (lse (b, h, l_q): what the backward needs)."""
    out, lse = _ext.attention(q, k, v, causal=causal, scale=scale, algorithm=algorithm, n_threads=n_threads)
    conv = converter(q)
    return (conv(out), conv(lse)) if return_lse else conv(out)


def attention_backward(q: Array, k: Array, v: Array, out: Array, lse: Array, grad_out: Array, *,
                       causal: bool = True, scale: float = 0.0, algorithm: str = "tiled", n_threads: int = 0) -> dict:
    """Gradients of :func:`attention` from its out and lse. Returns a dict ``{"q", "k", "v"}``."""
    grads = _ext.attention_backward(q, k, v, out, lse, grad_out, causal=causal, scale=scale, algorithm=algorithm,
                                    n_threads=n_threads)
    conv = converter(q)
    return {name: conv(g) for name, g in zip(("q", "k", "v"), grads)}


def rms_norm(x: Array, weight: Optional[Array] = None, *, eps: float = 1e-5, path: str = "automatic") -> Any:
    """RMSNorm over the last dimension: ``y = x / sqrt(mean(x²) + eps) · weight``. x (rows, dim) f32/f64 with unit
    stride along dim; weight (dim)."""
    return converter(x)(_ext.rms_norm(x, weight, eps=eps, path=path))


def long_conv(x: Array, K: Array, D: Optional[Array] = None, *, gate_in: Optional[Array] = None,
              gate_out: Optional[Array] = None, activation: str = "none", path: str = "automatic",
              threads: int = 0) -> Any:
    """The S4 layers' long convolution, per batch row and channel c: ``u = gate_in · x``, then
    ``y[t, c] = gate_out[t, c] · act(Σ_{j≤t} K[c, j] u[t−j, c] + D[c] u[t, c])``, act ``"none"`` or ``"gelu"`` (the
    erf form). x and the gates (b, l, h) f32/f64, unit stride along h; K (h, L ≥ l) contiguous; D (h). CPU: direct
    sums up to 128 steps, FFTs above; CUDA: direct sums."""
    y, _ = _ext.long_conv(x, K, D, gate_in=gate_in, gate_out=gate_out, activation=activation, path=path,
                          threads=threads)
    return converter(x)(y)


def glu(z: Array, *, path: str = "automatic") -> Any:
    """The gated linear unit over the last dimension (torch.nn.GLU(dim=-1)): ``y = z[:, :h] · σ(z[:, h:])`` for z
    (rows, 2h) f32/f64."""
    return converter(z)(_ext.glu(z, path=path))


def linear(x: Array, weight: Array, bias: Optional[Array] = None, *, path: str = "automatic",
           num_threads: int = 1) -> Any:
    """``y = x weightᵀ + bias``: x (rows, in) f32/f64; weight (out, in) contiguous (x's dtype, or f16/bf16 with f32
    x); bias (out)."""
    return converter(x)(_ext.linear(x, weight, bias, path=path, num_threads=num_threads))
