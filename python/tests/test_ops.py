"""The ops through the bindings, on NumPy and PyTorch inputs, against the definitions in references.py: every
argument reaches the library in its place (D, z, biases, softplus, states, groups, options)."""

import numpy as np
import pytest
import torch

import ssm
from references import (delta_rule_ref, linear_attention_ref, rwkv4_ref, rwkv7_ref, selective_scan_ref, ssd_ref,
                        ttt_linear_ref)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("groups", [1, 2])
def test_selective_scan_matches_definition(rng, groups):
    b, d, n, l = 2, 4, 3, 37
    u = rng.standard_normal((b, d, l))
    delta = rng.uniform(-1, 1, (b, d, l))
    A = -rng.uniform(0.5, 2, (d, n))
    B = rng.standard_normal((b, groups, n, l))
    C = rng.standard_normal((b, groups, n, l))
    D = rng.standard_normal(d)
    z = rng.standard_normal((b, d, l))
    bias = rng.uniform(-0.5, 0.5, d)
    h0 = rng.standard_normal((b, d, n))
    out, last = ssm.selective_scan(u, delta, A, B, C, D, z, bias, True, h0, return_last_state=True)
    ref, ref_last = selective_scan_ref(_t(u), _t(delta), _t(A), _t(B), _t(C), _t(D), _t(z), _t(bias), True, _t(h0),
                                       return_last_state=True)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(last, ref_last.numpy(), rtol=1e-10, atol=1e-10)
    for path in ("reference", "sequential", "chunked"):
        np.testing.assert_allclose(ssm.selective_scan(u, delta, A, B, C, D, z, bias, True, h0, path=path), out,
                                   rtol=1e-10, atol=1e-10)


def test_selective_scan_backward_matches_autograd(rng):
    b, d, n, l = 1, 3, 2, 9
    arrays = [rng.standard_normal((b, d, l)), rng.uniform(0.1, 0.5, (b, d, l)), -rng.uniform(0.5, 2, (d, n)),
              rng.standard_normal((b, n, l)), rng.standard_normal((b, n, l)), rng.standard_normal(d)]
    g = rng.standard_normal((b, d, l))
    grads = ssm.selective_scan_backward(*arrays[:5], g, D=arrays[5])
    ts = [_t(a).requires_grad_() for a in arrays]
    selective_scan_ref(*ts[:5], D=ts[5]).backward(_t(g))
    for name, t in zip(("u", "delta", "A", "B", "C", "D"), ts):
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=name)
    assert grads["z"] is None and grads["initial_state"] is None


def test_ssd_matches_definition(rng):
    b, l, h, p, g, n = 2, 13, 4, 3, 2, 5
    x = rng.standard_normal((b, l, h, p)).astype(np.float32)
    dt = rng.uniform(-1, 1, (b, l, h)).astype(np.float32)
    A = -rng.uniform(0.5, 2, h).astype(np.float32)
    B = rng.standard_normal((b, l, g, n)).astype(np.float32)
    C = rng.standard_normal((b, l, g, n)).astype(np.float32)
    D = rng.standard_normal(h).astype(np.float32)
    z = rng.standard_normal((b, l, h, p)).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, h).astype(np.float32)
    out, final = ssm.ssd(x, dt, A, B, C, D, z, bias, True, return_final_state=True, chunk_size=4)
    ref, ref_final = ssd_ref(*map(_t, (x, dt, A, B, C, D, z, bias)), dt_softplus=True)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(final, ref_final.numpy(), rtol=1e-4, atol=1e-4)
    # (b, l, h p) with head_dim, and a torch input, give the same
    flat = ssm.ssd(_t(x.reshape(b, l, h * p)), _t(dt), _t(A), _t(B), _t(C), _t(D), _t(z.reshape(b, l, h * p)),
                   _t(bias), True, chunk_size=4, head_dim=p)
    assert isinstance(flat, torch.Tensor)
    np.testing.assert_allclose(flat.numpy().reshape(out.shape), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("feature_map,normalize,gamma", [("identity", False, None), ("elu_plus_one", True, None),
                                                         ("identity", False, [0.9, 0.5])])
def test_linear_attention_matches_definition(rng, feature_map, normalize, gamma):
    b, l, g, h, dk, dv = 2, 11, 1, 2, 3, 4
    q = rng.standard_normal((b, l, g, dk))
    k = rng.standard_normal((b, l, g, dk))
    v = rng.standard_normal((b, l, h, dv))
    out, state, _ = ssm.linear_attention(q, k, v, feature_map=feature_map, normalize=normalize, scale=0.5,
                                         gamma=gamma, chunk_size=4, return_final_state=True)
    ref, ref_state = linear_attention_ref(_t(q), _t(k), _t(v), feature_map, normalize, 1e-6, 0.5, gamma)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["chunked", "recurrent", "reference"])
def test_gla_log_gate_matches_definition(rng, path):
    b, l, g, h, dk, dv = 2, 19, 1, 2, 5, 3
    q, k = rng.standard_normal((b, l, g, dk)), rng.standard_normal((b, l, g, dk))
    v = rng.standard_normal((b, l, h, dv))
    log_gate = -rng.uniform(0, 4, (b, l, h, dk))  # spans the chunked path splits
    out, state, _ = ssm.linear_attention(q, k, v, log_gate=log_gate, gamma=[0.9, 1.0], chunk_size=8, path=path,
                                         return_final_state=True)
    ref, ref_state = linear_attention_ref(_t(q), _t(k), _t(v), gamma=[0.9, 1.0], log_gate=_t(log_gate))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-9, atol=1e-9)
    with pytest.raises(ssm.Error, match="log_gate"):
        ssm.linear_attention(q, k, v, log_gate=-log_gate)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("path", ["chunked", "recurrent", "reference"])
def test_delta_rule_matches_definition(rng, gated, path):
    b, l, g, h, dk, dv = 2, 13, 1, 2, 4, 3
    q, k = rng.standard_normal((b, l, g, dk)), rng.standard_normal((b, l, g, dk))
    v = rng.standard_normal((b, l, h, dv))
    beta = rng.uniform(0.2, 1.8, (b, l, h))
    gate = -rng.uniform(0.05, 1.0, (b, l, h)) if gated else None
    s0 = rng.standard_normal((b, h, dk, dv))
    out, state = ssm.delta_rule(q, k, v, beta, gate, s0, scale=0.5, chunk_size=4, path=path, return_final_state=True)
    ref, ref_state = delta_rule_ref(_t(q), _t(k), _t(v), _t(beta), None if gate is None else _t(gate), _t(s0), 0.5)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-10, atol=1e-10)
    grads = ssm.delta_rule_backward(q, k, v, beta, np.ones_like(v), gate, s0, scale=0.5, chunk_size=4, path=path)
    assert sorted(grads) == ["beta", "g", "initial_state", "k", "q", "v"]
    assert (grads["g"] is None) == (not gated) and grads["beta"].shape == beta.shape
    leaves = [_t(a).requires_grad_() for a in (q, k, v, beta, s0)] + ([_t(gate).requires_grad_()] if gated else [])
    ref, _ = delta_rule_ref(*leaves[:4], leaves[5] if gated else None, leaves[4], 0.5)
    ref.sum().backward()
    for name, leaf in zip(("q", "k", "v", "beta", "initial_state", "g"), leaves):
        np.testing.assert_allclose(grads[name], leaf.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


def test_delta_rule_errors_name_the_argument(rng):
    q = rng.standard_normal((1, 3, 1, 4))
    v = rng.standard_normal((1, 3, 2, 4))
    with pytest.raises(ssm.Error, match=r"delta_rule: argument 'beta'"):
        ssm.delta_rule(q, q, v, np.full((1, 3, 2), 2.5))  # beta outside (0, 2]
    with pytest.raises(ssm.Error, match=r"delta_rule: argument 'g'"):
        ssm.delta_rule(q, q, v, np.full((1, 3, 2), 0.5), np.full((1, 3, 2), 0.1))  # a growing gate
    with pytest.raises(ssm.Error, match=r"delta_rule: argument 'path'"):
        ssm.delta_rule(q, q, v, np.full((1, 3, 2), 0.5), path="fast")


def _rwkv4_inputs(rng, b, l, c):
    """k, v (b, l, c); time_decay, time_first (c); a state (b, 3, c): num, den > 0, max."""
    k, v = rng.standard_normal((b, l, c)), rng.standard_normal((b, l, c))
    time_decay, time_first = rng.uniform(-2, 1, c), rng.uniform(-1, 1, c)
    s0 = np.stack([rng.standard_normal((b, c)), rng.uniform(0.5, 2, (b, c)), rng.uniform(-1, 1, (b, c))], axis=1)
    return k, v, time_decay, time_first, s0


@pytest.mark.parametrize("path", ["automatic", "recurrent", "reference"])
def test_rwkv4_matches_definition(rng, path):
    b, l, c = 2, 11, 5
    k, v, td, tf, s0 = _rwkv4_inputs(rng, b, l, c)
    for init in (None, s0):  # the empty state (0, 0, −1e38), then a given one
        out, state = ssm.rwkv4(k, v, td, tf, init, checkpoint=4, path=path, return_final_state=True)
        ref, ref_state = rwkv4_ref(*(_t(x) for x in (k, v, td, tf)), None if init is None else _t(init))
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-10, atol=1e-10)
    # gradients from out and from every part of the final state (num, den and max)
    g_out, g_state = rng.standard_normal((b, l, c)), rng.standard_normal((b, 3, c))
    grads = ssm.rwkv4_backward(k, v, td, tf, g_out, s0, grad_final_state=g_state, checkpoint=4, path=path)
    assert sorted(grads) == ["initial_state", "k", "time_decay", "time_first", "v"]
    leaves = [_t(x).requires_grad_() for x in (k, v, td, tf, s0)]
    ref, ref_state = rwkv4_ref(*leaves)
    torch.autograd.backward([ref, ref_state], [_t(g_out), _t(g_state)])
    for name, leaf in zip(("k", "v", "time_decay", "time_first", "initial_state"), leaves):
        np.testing.assert_allclose(grads[name], leaf.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)
    assert ssm.rwkv4_backward(k, v, td, tf, g_out, path=path)["initial_state"] is None


def test_rwkv4_packed_sequences_in_float32(rng):
    """cu_seqlens packs sequences of 3, 2 and 4 tokens along l, each from its own initial state: the same as running
    them one by one; PyTorch float32 tensors in and out."""
    k, v, td, tf, s0 = (_t(x.astype(np.float32)) for x in _rwkv4_inputs(rng, 1, 9, 4))
    s0 = torch.cat([s0, s0 + 0.5, s0 - 0.5])
    cu = torch.tensor([0, 3, 5, 9], dtype=torch.int32)
    out, state = ssm.rwkv4(k, v, td, tf, s0, cu, return_final_state=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and state.shape == (3, 3, 4)
    for i in range(3):
        seq = slice(int(cu[i]), int(cu[i + 1]))
        one, one_state = ssm.rwkv4(k[:, seq], v[:, seq], td, tf, s0[i:i + 1], return_final_state=True)
        torch.testing.assert_close(out[:, seq], one, rtol=0, atol=0)
        torch.testing.assert_close(state[i:i + 1], one_state, rtol=0, atol=0)
        ref, ref_state = rwkv4_ref(*(x.double() for x in (k[:, seq], v[:, seq], td, tf, s0[i:i + 1])))
        torch.testing.assert_close(one.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(one_state.double(), ref_state, rtol=1e-5, atol=1e-5)


def test_rwkv4_errors_name_the_argument(rng):
    k, v, td, tf, s0 = _rwkv4_inputs(rng, 1, 3, 4)
    with pytest.raises(ssm.Error, match=r"rwkv4: argument 'time_decay'"):
        ssm.rwkv4(k, v, np.full(4, np.inf), tf)  # every value must be finite
    with pytest.raises(ssm.Error, match=r"rwkv4: argument 'time_first'"):
        ssm.rwkv4(k, v, td, tf.astype(np.float32))  # f64 k: f64 parameters
    s0[0, 1, 2] = -1.0
    with pytest.raises(ssm.Error, match=r"rwkv4: argument 'initial_state'"):
        ssm.rwkv4(k, v, td, tf, s0)  # den < 0
    with pytest.raises(ssm.Error, match=r"rwkv4: argument 'v'"):
        ssm.rwkv4(k, v[:, :, :3], td, tf)
    with pytest.raises(ssm.Error, match=r"rwkv4: argument 'path'"):
        ssm.rwkv4(k, v, td, tf, path="fast")
    with pytest.raises(ssm.Error, match=r"rwkv4_backward: argument 'grad_out'"):
        ssm.rwkv4_backward(k, v, td, tf, k[:, :2])


def _rwkv7_inputs(rng, b, l, h, dk, dv):
    """RWKV-7's transition as the model forms it: a = −κ̂, b = κ̂ ⊙ a_icl with κ̂ a unit vector, a_icl in (0, 1)."""
    q, k = rng.standard_normal((b, l, h, dk)), rng.standard_normal((b, l, h, dk))
    v = rng.standard_normal((b, l, h, dv))
    log_w = -rng.uniform(0.01, 0.6, (b, l, h, dk))
    kappa = rng.standard_normal((b, l, h, dk))
    kappa /= np.linalg.norm(kappa, axis=-1, keepdims=True)
    return q, k, v, log_w, -kappa, kappa * rng.uniform(0.05, 0.95, (b, l, h, dk))


@pytest.mark.parametrize("path", ["chunked", "recurrent", "reference"])
def test_rwkv7_matches_definition(rng, path):
    b, l, h, dk, dv = 2, 11, 2, 4, 3
    q, k, v, log_w, a, bb = _rwkv7_inputs(rng, b, l, h, dk, dv)
    s0 = rng.standard_normal((b, h, dk, dv))
    out, state = ssm.rwkv7(q, k, v, log_w, a, bb, s0, scale=0.5, chunk_size=4, path=path, return_final_state=True)
    ref, ref_state = rwkv7_ref(*(_t(x) for x in (q, k, v, log_w, a, bb, s0)), 0.5)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, ref_state.numpy(), rtol=1e-10, atol=1e-10)
    grads = ssm.rwkv7_backward(q, k, v, log_w, a, bb, np.ones_like(v), s0, scale=0.5, chunk_size=4, path=path)
    assert sorted(grads) == ["a", "b", "initial_state", "k", "log_w", "q", "v"]
    leaves = [_t(x).requires_grad_() for x in (q, k, v, log_w, a, bb, s0)]
    ref, _ = rwkv7_ref(*leaves, 0.5)
    ref.sum().backward()
    for name, leaf in zip(("q", "k", "v", "log_w", "a", "b", "initial_state"), leaves):
        np.testing.assert_allclose(grads[name], leaf.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


def test_rwkv7_errors_name_the_argument(rng):
    q, k, v, log_w, a, bb = _rwkv7_inputs(rng, 1, 3, 2, 4, 3)
    with pytest.raises(ssm.Error, match=r"rwkv7: argument 'log_w'"):
        ssm.rwkv7(q, k, v, -log_w, a, bb)  # a growing decay
    with pytest.raises(ssm.Error, match=r"rwkv7: argument 'b'"):
        ssm.rwkv7(q, k, v, log_w, a, bb[:, :, :1])
    with pytest.raises(ssm.Error, match=r"rwkv7: argument 'path'"):
        ssm.rwkv7(q, k, v, log_w, a, bb, path="fast")


@pytest.mark.parametrize("path", ["automatic", "recurrent", "reference"])
def test_ttt_linear_matches_torch_autograd_inner_training(rng, path):
    b, l, h, d, m = 2, 11, 2, 4, 4  # l = 11: two full mini-batches and a partial one
    q, k, v = (rng.uniform(-1, 1, (b, l, h, d)) for _ in range(3))
    eta = rng.uniform(0, 0.5, (b, l, h))
    ln_w, ln_b = rng.uniform(0.5, 1.5, (h, d)), rng.uniform(-0.5, 0.5, (h, d))
    tau = 1.0 / np.arange(1, m + 1)
    W0 = rng.uniform(-0.5, 0.5, (b, h, d + 1, d))
    out, state, pending = ssm.ttt_linear(q, k, v, eta, ln_w, ln_b, tau, W0, mini_batch_size=m, path=path,
                                         return_final_state=True)
    ref, ref_state = ttt_linear_ref(*(_t(x) for x in (q, k, v, eta, ln_w, ln_b, tau, W0)), m)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, ref_state.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert np.abs(pending).max() > 0  # l % m = 3 tokens pending
    # continuing from (state, pending) at start = l % m equals running the longer sequence
    q2, k2, v2 = (rng.uniform(-1, 1, (b, 5, h, d)) for _ in range(3))
    eta2 = rng.uniform(0, 0.5, (b, 5, h))
    more = ssm.ttt_linear(q2, k2, v2, eta2, ln_w, ln_b, tau, state, pending, mini_batch_size=m, start=l % m, path=path)
    whole = ssm.ttt_linear(*(np.concatenate(p, axis=1) for p in ((q, q2), (k, k2), (v, v2), (eta, eta2))), ln_w, ln_b,
                           tau, W0, mini_batch_size=m, path=path)
    np.testing.assert_allclose(more, whole[:, l:], rtol=1e-12, atol=1e-12)


def test_ttt_linear_errors_name_the_argument(rng):
    b, l, h, d = 1, 3, 2, 4
    q, k, v = (rng.uniform(-1, 1, (b, l, h, d)) for _ in range(3))
    eta, ln_w, ln_b = rng.uniform(0, 1, (b, l, h)), np.ones((h, d)), np.zeros((h, d))
    with pytest.raises(ssm.Error, match=r"ttt_linear: argument 'eta'"):
        ssm.ttt_linear(q, k, v, -eta, ln_w, ln_b)
    with pytest.raises(ssm.Error, match=r"ttt_linear: argument 'ln_bias'"):
        ssm.ttt_linear(q, k, v, eta, ln_w, ln_b[:1])
    with pytest.raises(ssm.Error, match=r"ttt_linear: argument 'start'"):
        ssm.ttt_linear(q, k, v, eta, ln_w, ln_b, mini_batch_size=4, start=4)
    with pytest.raises(ssm.Error, match=r"ttt_linear: argument 'path'"):
        ssm.ttt_linear(q, k, v, eta, ln_w, ln_b, path="chunked")


def test_causal_conv1d_and_backward(rng):
    b, d, l, w = 2, 3, 10, 4
    x = rng.standard_normal((b, d, l))
    weight = rng.standard_normal((d, w))
    bias = rng.standard_normal(d)
    out, final = ssm.causal_conv1d(x, weight, bias, return_final_state=True)
    xt, wt, bt = (_t(a).requires_grad_() for a in (x, weight, bias))
    ref = torch.nn.functional.silu(torch.nn.functional.conv1d(xt, wt[:, None, :], bt, padding=w - 1, groups=d)[..., :l])
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final, x[:, :, l - w + 1:], rtol=0, atol=0)
    g = rng.standard_normal((b, d, l))
    grads = ssm.causal_conv1d_backward(x, weight, g, bias)
    ref.backward(_t(g))
    for name, t in (("x", xt), ("weight", wt), ("bias", bt)):
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_attention_and_backward(rng):
    b, l, h, hkv, p = 1, 7, 4, 2, 5
    q = rng.standard_normal((b, l, h, p))
    k = rng.standard_normal((b, l, hkv, p))
    v = rng.standard_normal((b, l, hkv, p))
    out, lse = ssm.attention(q, k, v, return_lse=True)
    qt, kt, vt = (_t(a).requires_grad_() for a in (q, k, v))
    kr, vr = kt.repeat_interleave(h // hkv, dim=2), vt.repeat_interleave(h // hkv, dim=2)
    s = torch.einsum("bqhp,bkhp->bhqk", qt, kr) / p**0.5
    s = s.masked_fill(torch.ones(l, l, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.einsum("bhqk,bkhp->bqhp", s.softmax(-1), vr)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(out.shape)
    grads = ssm.attention_backward(q, k, v, out, lse, g)
    ref.backward(_t(g))
    for name, t in (("q", qt), ("k", kt), ("v", vt)):
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_rms_norm_and_linear(rng):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    y = ssm.rms_norm(x, w, eps=1e-5)
    np.testing.assert_allclose(y, x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w, rtol=1e-5, atol=1e-6)
    W = rng.standard_normal((6, 8)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    np.testing.assert_allclose(ssm.linear(x, W, bias), x @ W.T + bias, rtol=1e-5, atol=1e-5)
    yt = ssm.linear(_t(x), _t(W))
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), x @ W.T, rtol=1e-5, atol=1e-5)


def _moe_ref(x, router, w_gate_up, w_down, k, normalize):
    """The mixture of experts written with PyTorch: softmax over every expert, top k, SwiGLU experts."""
    p = torch.softmax(x @ router.T, dim=-1)
    w, idx = torch.topk(p, k, dim=-1)
    if normalize:
        w = w / w.sum(-1, keepdim=True)
    inner = w_down.shape[2]
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = int(idx[t, j])
            h = w_gate_up[e] @ x[t]
            out[t] += w[t, j] * (w_down[e] @ (torch.nn.functional.silu(h[:inner]) * h[inner:]))
    return out


@pytest.mark.parametrize("path", ["reference", "grouped"])
@pytest.mark.parametrize("k,normalize", [(1, False), (2, False), (2, True), (4, True)])
def test_moe_matches_definition(rng, path, k, normalize):
    t, H, I, E = 9, 6, 5, 4
    x, router = rng.standard_normal((t, H)), rng.standard_normal((E, H))
    gate_up, down = rng.standard_normal((E, 2 * I, H)), rng.standard_normal((E, H, I))
    out, logits = ssm.moe(x, router, gate_up, down, top_k=k, normalize_topk=normalize, path=path,
                          return_router_logits=True)
    ref = _moe_ref(*(_t(a) for a in (x, router, gate_up, down)), k, normalize)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(logits, x @ router.T, rtol=1e-12, atol=1e-12)
    # PyTorch float32 tensors in and out, bf16 weights
    xt = torch.from_numpy(x.astype(np.float32))
    w16 = [torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16) for a in (router, gate_up, down)]
    out16 = ssm.moe(xt, *w16, top_k=k, normalize_topk=normalize, path=path)
    assert isinstance(out16, torch.Tensor) and out16.dtype == torch.float32
    ref16 = _moe_ref(xt.double(), *(w.double() for w in w16), k, normalize)
    torch.testing.assert_close(out16.double(), ref16, rtol=1e-4, atol=1e-4)


def test_moe_load_balancing_loss_and_errors(rng):
    """E Σ_j Σ_e f[j, e] P[e] over two layers' logits with a padding mask, its gradient against autograd of the same
    formula (the routing fractions held constant), and bad input named."""
    E, k, t = 5, 2, 6
    layers = [rng.standard_normal((t, E)) for _ in range(2)]
    mask = np.array([1, 1, 0, 1, 1, 1], np.float64)
    loss, grad = ssm.moe_load_balancing_loss(layers, k, mask, return_grad=True)
    logits = torch.tensor(np.concatenate(layers), requires_grad=True)
    m = torch.tensor(np.concatenate([mask, mask]))
    p = torch.softmax(logits, -1)
    chosen = torch.nn.functional.one_hot(torch.topk(p, k, -1).indices, E).sum(1).double()  # (n, E)
    f = (m[:, None] * chosen).sum(0) / m.sum()
    P = (m[:, None] * p).sum(0) / m.sum()
    ref = E * (f * P).sum()
    ref.backward()
    assert abs(loss - float(ref)) < 1e-12
    np.testing.assert_allclose(grad, logits.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert ssm.moe_load_balancing_loss([np.zeros((4, 3))], 2) == pytest.approx(2.0)
    x = rng.standard_normal((3, 4))
    with pytest.raises(ssm.Error, match=r"moe: argument 'top_k'"):
        ssm.moe(x, rng.standard_normal((2, 4)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 4, 3)), top_k=3)
    with pytest.raises(ssm.Error, match=r"moe: argument 'w_down'"):
        ssm.moe(x, rng.standard_normal((2, 4)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 3, 4)))
    with pytest.raises(ssm.Error, match=r"moe: argument 'activation'"):
        ssm.moe(x, rng.standard_normal((2, 4)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 4, 3)),
                activation="relu")
    with pytest.raises(ssm.Error, match=r"moe_load_balancing_loss: argument 'mask'"):
        ssm.moe_load_balancing_loss(layers, k, -mask)


def test_long_conv_and_glu_match_definitions(rng):
    """long_conv against numpy's convolution (skip, GELU, both gates; either side of the CPU's FFT crossover), glu
    against torch.nn.functional.glu; their errors name the argument."""
    import math
    for l in (9, 150):
        b, h = 2, 3
        x, K = rng.standard_normal((b, l, h)), rng.standard_normal((h, l + 2)) / np.arange(1, l + 3)
        D, g_in, g_out = rng.standard_normal(h), rng.standard_normal((b, l, h)), rng.standard_normal((b, l, h))
        u = g_in * x
        conv = np.array([[np.convolve(u[bi, :, c], K[c])[:l] for c in range(h)] for bi in range(b)]).transpose(0, 2, 1)
        pre = conv + D * u
        gelu = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
        for path in ("reference", "automatic"):
            y = ssm.long_conv(x, K, D, gate_in=g_in, gate_out=g_out, activation="gelu", path=path)
            np.testing.assert_allclose(y, g_out * gelu, rtol=1e-10, atol=1e-10)
        plain = np.array([[np.convolve(x[bi, :, c], K[c])[:l] for c in range(h)] for bi in range(b)]).transpose(0, 2, 1)
        np.testing.assert_allclose(ssm.long_conv(x, K), plain, rtol=1e-10, atol=1e-10)
    z = rng.standard_normal((5, 8))
    np.testing.assert_allclose(ssm.glu(z), torch.nn.functional.glu(torch.from_numpy(z), dim=-1).numpy(),
                               rtol=1e-14, atol=1e-14)
    with pytest.raises(ssm.Error, match=r"long_conv: argument 'K'"):
        ssm.long_conv(x, K[:, :3])
    with pytest.raises(ssm.Error, match=r"long_conv: argument 'activation'"):
        ssm.long_conv(x, K, activation="relu")
    with pytest.raises(ssm.Error, match=r"glu: argument 'z'"):
        ssm.glu(z[:, :7])


def test_hyena_matches_definition(rng):
    """Order 2 and 3 against the recurrence written with numpy's convolution; gates sliced out of one projection."""
    b, l, d = 2, 9, 4
    for N in (2, 3):
        z = rng.standard_normal((b, l, (N + 1) * d))
        x = [z[:, :, i * d:(i + 1) * d] for i in range(N)]
        v = z[:, :, N * d:]
        h, bias = rng.standard_normal((N - 1, d, l + 1)), rng.standard_normal((N - 1, d))
        for path in ("reference", "fft"):
            y = ssm.hyena(v, x, h, bias, path=path)
            w = v.copy()
            for o in range(N - 1):
                wp = w * x[N - 1 - o]
                conv = np.array([[np.convolve(wp[bi, :, c], h[o, c])[:l] for c in range(d)] for bi in range(b)])
                conv = conv.transpose(0, 2, 1)  # (b, d, l) -> (b, l, d)
                w = conv + bias[o] * wp
            np.testing.assert_allclose(y, w * x[0], rtol=1e-10, atol=1e-10)
        grads = ssm.hyena_backward(v, x, h, bias, np.ones((b, l, d)))
        assert grads["x"].shape == (N, b, l, d) and grads["h"].shape == h.shape
    # The extension reports the path the op ran (the library's own answer, not the one asked for).
    from ssm import _ext
    assert _ext.hyena(v, x, h, bias, path="reference")[1] == "reference"
    assert _ext.hyena(v, x, h, bias)[1] == "cpu-fft"
    with pytest.raises(ssm.Error, match=r"hyena: argument 'h'"):
        ssm.hyena(v, x, h[:, :, :3], bias)

