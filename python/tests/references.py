"""Plain PyTorch statements of the ops' definitions, token by token, for the tests (written here from the formulas;
autograd through them gives reference gradients).

selective_scan_ref follows the semantics of mamba_ssm's ``selective_scan_ref``: u, delta (b, d, l); A (d, n);
B, C (b, n, l), (b, g, n, l) or (d, n); D, delta_bias (d); z (b, d, l); softplus with PyTorch's threshold of 20;
out = (C·h + D u) · silu(z); the last state optionally. Computation in u's dtype, or f32 for 16-bit u.
"""

import torch
import torch.nn.functional as F


def _variable(X, t, d):
    """B_t or C_t for every channel: (b, d, n) from X (b, n, l) or (b, g, n, l); X (d, n) is fixed."""
    if X.dim() == 2:
        return X.unsqueeze(0)
    if X.dim() == 3:
        X = X.unsqueeze(1)
    g = X.shape[1]
    return X[..., t].repeat_interleave(d // g, dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_last_state=False):
    dtype = u.dtype
    wt = torch.float64 if dtype == torch.float64 else torch.float32
    u, delta = u.to(wt), delta.to(wt)
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None].to(wt)
    if delta_softplus:
        delta = F.softplus(delta)  # threshold 20, as mamba's
    b, d, l = u.shape
    n = A.shape[1]
    h = u.new_zeros(b, d, n) if initial_state is None else initial_state.to(wt)
    ys = []
    for t in range(l):
        Bt = _variable(B, t, d).to(wt)
        Ct = _variable(C, t, d).to(wt)
        dt = delta[:, :, t, None]  # (b, d, 1)
        h = torch.exp(dt * A) * h + dt * Bt * u[:, :, t, None]
        ys.append((h * Ct).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, l)
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(wt))
    y = y.to(dtype)
    return (y, h) if return_last_state else y


def ssd_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_state=None):
    """Mamba-2's SSD token by token: H_t = exp(Δ_t A) H_{t-1} + Δ_t x_t B_tᵀ, y_t = H_t C_t + D x_t, out = y silu(z).
    x (b, l, h, p); dt (b, l, h); A (h); B, C (b, l, g, n); D (h) or (h, p); returns (out, final_state)."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    Bh = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(h // g, dim=2)
    H = x.new_zeros(b, h, p, n) if initial_state is None else initial_state
    ys = []
    for t in range(l):
        d = dt[:, t, :, None, None]  # (b, h, 1, 1)
        H = torch.exp(d * A[None, :, None, None]) * H + d * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        y = (H * Ch[:, t, :, None, :]).sum(-1)  # (b, h, p)
        if D is not None:
            y = y + (D[:, None] if D.dim() == 1 else D) * x[:, t]
        ys.append(y)
    out = torch.stack(ys, dim=1)
    if z is not None:
        out = out * F.silu(z)
    return out, H


def linear_attention_ref(q, k, v, feature_map="identity", normalize=False, eps=1e-6, scale=1.0, gamma=None,
                         initial_state=None, log_gate=None):
    """S_t = diag(α_t) S_{t-1} + φ(k_t) v_tᵀ, z_t = α_t z_{t-1} + φ(k_t), α_t = γ exp(log_gate_t),
    y_t = S_tᵀ q̃_t [/ (z_tᵀ q̃_t + eps)], q̃ = scale φ(q).
    q, k (b, l, g, dk); v (b, l, h, dv); log_gate (b, l, h, dk); returns (out, final_state)."""
    b, l, h, dv = v.shape
    g, dk = q.shape[2], q.shape[3]
    phi = (lambda x: x) if feature_map == "identity" else (lambda x: F.elu(x) + 1)
    qh = scale * phi(q).repeat_interleave(h // g, dim=2)  # (b, l, h, dk)
    kh = phi(k).repeat_interleave(h // g, dim=2)
    gam = v.new_ones(h) if gamma is None else torch.tensor(gamma, dtype=v.dtype)
    S = v.new_zeros(b, h, dk, dv) if initial_state is None else initial_state
    Z = v.new_zeros(b, h, dk)
    ys = []
    for t in range(l):
        a = gam[None, :, None] * (1 if log_gate is None else torch.exp(log_gate[:, t]))  # (b or 1, h, dk)
        S = a[..., None] * S + kh[:, t, :, :, None] * v[:, t, :, None, :]
        Z = a * Z + kh[:, t]
        y = (S * qh[:, t, :, :, None]).sum(2)  # (b, h, dv)
        if normalize:
            y = y / ((Z * qh[:, t]).sum(-1, keepdim=True) + eps)
        ys.append(y)
    return torch.stack(ys, dim=1), S


def delta_rule_ref(q, k, v, beta, g=None, initial_state=None, scale=1.0, l2_normalize=True, norm_eps=1e-6):
    """The delta rule token by token: S_t = α_t (I − β_t k̂_t k̂_tᵀ) S_{t−1} + β_t k̂_t v_tᵀ, o_t = S_tᵀ q̂_t, with
    α_t = exp(g_t) (1 without g), q̂ = scale q / sqrt(|q|² + eps), k̂ = k / sqrt(|k|² + eps) (or q̂ = scale q, k̂ = k).
    q, k (b, l, g, dk); v (b, l, h, dv); beta, g (b, l, h); returns (out, final_state)."""
    b, l, h, dv = v.shape
    groups, dk = q.shape[2], q.shape[3]
    if l2_normalize:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + norm_eps)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + norm_eps)
    qh = scale * q.repeat_interleave(h // groups, dim=2)  # (b, l, h, dk)
    kh = k.repeat_interleave(h // groups, dim=2)
    S = v.new_zeros(b, h, dk, dv) if initial_state is None else initial_state
    eye = torch.eye(dk, dtype=v.dtype)
    ys = []
    for t in range(l):
        kt = kh[:, t]  # (b, h, dk)
        bt = beta[:, t, :, None, None]
        decay = 1.0 if g is None else torch.exp(g[:, t])[:, :, None, None]
        S = decay * ((eye - bt * kt[..., :, None] * kt[..., None, :]) @ S) + bt * kt[..., :, None] * v[:, t, :, None, :]
        ys.append((S * qh[:, t, :, :, None]).sum(2))
    return torch.stack(ys, dim=1), S


def rwkv4_ref(k, v, time_decay, time_first, initial_state=None):
    """RWKV-4's WKV recurrence token by token on the scaled state (num, den, max), as transformers'
    ``rwkv_linear_attention_cpu`` writes it: w = −exp(time_decay), u = time_first, the state starting from (0, 0,
    −1e38) unless given; q = max(max, u + k), out = (e^{max−q} num + e^{u+k−q} v) / (e^{max−q} den + e^{u+k−q}); then
    q' = max(max + w, k), num = e^{max+w−q'} num + e^{k−q'} v, den = e^{max+w−q'} den + e^{k−q'}, max = q'.
    k, v (b, l, c); time_decay, time_first (c); initial_state (b, 3, c). Returns (out, final_state (b, 3, c))."""
    b, l, c = k.shape
    w, u = -torch.exp(time_decay), time_first
    if initial_state is None:
        num, den = k.new_zeros(b, c), k.new_zeros(b, c)
        mx = k.new_full((b, c), -1e38)
    else:
        num, den, mx = initial_state.unbind(1)
    ys = []
    for t in range(l):
        kt, vt = k[:, t], v[:, t]
        q = torch.maximum(mx, u + kt)
        e1, e2 = torch.exp(mx - q), torch.exp(u + kt - q)
        ys.append((e1 * num + e2 * vt) / (e1 * den + e2))
        q2 = torch.maximum(mx + w, kt)
        e1, e2 = torch.exp(mx + w - q2), torch.exp(kt - q2)
        num, den, mx = e1 * num + e2 * vt, e1 * den + e2, q2
    return torch.stack(ys, dim=1), torch.stack([num, den, mx], dim=1)


def rwkv7_ref(q, k, v, log_w, a, b, initial_state=None, scale=1.0):
    """RWKV-7's generalized delta rule token by token, in RWKV's own orientation (the state (dv, dk) per head, as
    BlinkDL's reference code writes it): S ← S diag(w) + (S a) bᵀ + v kᵀ, y = S (scale q), w = exp(log_w).
    q, k, log_w, a, b (b, l, h, dk); v (b, l, h, dv); initial_state in the library's (b, h, dk, dv); returns (out,
    final_state) with the final state in the library's orientation."""
    bsz, l, h, dv = v.shape
    dk = q.shape[3]
    S = v.new_zeros(bsz, h, dv, dk) if initial_state is None else initial_state.transpose(-1, -2)
    ys = []
    for t in range(l):
        sa = (S * a[:, t, :, None, :]).sum(-1)  # (b, h, dv)
        S = S * torch.exp(log_w[:, t, :, None, :]) + sa[..., :, None] * b[:, t, :, None, :] \
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S * (scale * q[:, t, :, None, :])).sum(-1))
    return torch.stack(ys, dim=1), S.transpose(-1, -2)


def ttt_linear_ref(q, k, v, eta, ln_weight, ln_bias, tau, W0, m, eps=1e-6):
    """TTT-Linear written out with torch: per head, mini-batches of m tokens from the start; inside one that starts
    with Ŵ′ (d + 1, d), every inner-loss gradient ∇ℓ_s(Ŵ′) of ℓ_s = ½‖LN(k̂_sᵀŴ) − (v_s − k_s)‖² is taken by
    torch.autograd, Ŵ_t = Ŵ′ − τ_i Σ_{s<=t} η_s ∇ℓ_s(Ŵ′), o_t = q_t + LN(q̂_tᵀŴ_t); at its end Ŵ′ ← Ŵ_t. Returns
    (out (b, l, h, d), Ŵ′ after the last complete mini-batch (b, h, d + 1, d))."""
    b, l, h, d = q.shape
    out = torch.empty_like(q)
    final = torch.empty_like(W0)
    one = torch.ones(1, dtype=q.dtype)
    for bi in range(b):
        for hh in range(h):
            ln = lambda z: F.layer_norm(z, (d,), ln_weight[hh], ln_bias[hh], eps)  # noqa: E731
            W = W0[bi, hh].clone()
            total = torch.zeros_like(W)
            for t in range(l):
                i = t % m
                Wg = W.clone().requires_grad_()
                kh = torch.cat([k[bi, t, hh], one])
                loss = 0.5 * ((ln(kh @ Wg) - (v[bi, t, hh] - k[bi, t, hh])) ** 2).sum()
                (grad,) = torch.autograd.grad(loss, Wg)
                total = total + eta[bi, t, hh] * grad
                Wt = W - tau[i] * total
                out[bi, t, hh] = q[bi, t, hh] + ln(torch.cat([q[bi, t, hh], one]) @ Wt)
                if i == m - 1:
                    W, total = Wt, torch.zeros_like(W)
            final[bi, hh] = W
    return out, final
