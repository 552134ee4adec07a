"""ssm.layers: each layer's forward over a sequence equals a prompt followed by one token at a time through its
state; results follow the input's framework; bad configs, inputs and states raise ssm.Error naming what is wrong."""

import numpy as np
import pytest
import torch

import ssm
from ssm import layers

D_MODEL = 32


def _layers():
    return {
        "mamba": layers.MambaBlock(D_MODEL, d_state=8, seed=1),
        "mamba_ablated": layers.MambaBlock(D_MODEL, d_state=8, gated=False, selective=False, seed=1),
        "mamba2": layers.Mamba2Block(D_MODEL, d_state=16, head_dim=16, n_groups=2, chunk_size=8, seed=2),
        "deltanet": layers.DeltaNet(D_MODEL, heads=4, chunk_size=8, seed=3),
        "gated_deltanet": layers.DeltaNet(D_MODEL, heads=2, head_v_dim=32, gated=True, chunk_size=8, seed=4),
        "retnet": layers.LinearAttention.retnet(D_MODEL, 4, chunk_size=8, seed=5),
        "katharopoulos": layers.LinearAttention.katharopoulos(D_MODEL, 4, chunk_size=8, seed=6),
        "gla": layers.LinearAttention.gla(D_MODEL, 4, chunk_size=8, seed=8),
        "attention": layers.MultiHeadAttention(D_MODEL, n_heads=4, n_kv_heads=2, rotary=True, seed=7),
        "rwkv7": layers.Rwkv7(D_MODEL, head_dim=8, decay_rank=8, a_rank=8, gate_rank=8, seed=9),
        "rwkv4_time_mix": layers.Rwkv4(D_MODEL, kind="time_mix", d_att=24, seed=11),
        "rwkv4_channel_mix": layers.Rwkv4(D_MODEL, kind="channel_mix", d_ffn=40, seed=12),
        "ttt_linear": layers.TTTLinear(D_MODEL, heads=4, mini_batch_size=4, use_gate=True, seed=10),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_prompt_then_tokens_equals_one_forward(name):
    layer = _layers()[name]
    b, l, prompt = 2, 21, 13  # lengths the chunk sizes do not divide
    x = np.random.default_rng(7).standard_normal((b, l, D_MODEL)).astype(np.float32)
    want = layer.forward(x)
    assert isinstance(want, np.ndarray) and want.shape == (b, l, D_MODEL) and want.dtype == np.float32
    assert np.all(np.isfinite(want)) and np.abs(want).max() > 0
    state = layer.init_state(b)
    assert state.b == b
    pieces = [layer.forward(np.ascontiguousarray(x[:, :prompt]), state)]
    for t in range(prompt, l):
        pieces.append(layer.forward(np.ascontiguousarray(x[:, t:t + 1]), state))
    got = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    # The state is the layer's own: a fresh one starts again from zero.
    np.testing.assert_allclose(layer.forward(x[:, :prompt].copy(), layer.init_state(b)), want[:, :prompt],
                               rtol=0, atol=2e-5 * np.abs(want).max())


def test_results_follow_the_input_framework_and_the_seed():
    layer = layers.DeltaNet(D_MODEL, heads=4, seed=3)
    x = np.random.default_rng(8).standard_normal((1, 5, D_MODEL)).astype(np.float32)
    out_t = layer.forward(torch.from_numpy(x))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (1, 5, D_MODEL)
    np.testing.assert_array_equal(out_t.numpy(), layer.forward(x))
    np.testing.assert_array_equal(layers.DeltaNet(D_MODEL, heads=4, seed=3).forward(x), layer.forward(x))
    assert not np.array_equal(layers.DeltaNet(D_MODEL, heads=4, seed=4).forward(x), layer.forward(x))
    assert layer.d_model == D_MODEL


def test_bad_configs_inputs_and_states_are_errors():
    with pytest.raises(ssm.Error, match=r"head_dim 24 does not divide d_inner = 64"):
        layers.Mamba2Block(D_MODEL, head_dim=24)
    with pytest.raises(ssm.Error, match=r"d_conv"):
        layers.MambaBlock(D_MODEL, d_conv=1)
    with pytest.raises(ssm.Error, match=r"argument 'feature_map'.*'relu'"):
        layers.LinearAttention(D_MODEL, feature_map="relu")
    with pytest.raises(ssm.Error, match=r"argument 'kind'.*'both'"):
        layers.Rwkv4(D_MODEL, kind="both")
    for layer in _layers().values():
        # The input is x, or u in the Mamba blocks (the papers' names).
        with pytest.raises(ssm.Error, match=r"argument '[xu]'"):
            layer.forward(np.zeros((1, 3, D_MODEL + 1), np.float32))
        with pytest.raises(ssm.Error, match=r"argument '[xu]'"):
            layer.forward(np.zeros((1, 3, D_MODEL), np.float64))
        with pytest.raises(ssm.Error, match=r"'b'"):
            layer.init_state(0)
        with pytest.raises(ssm.Error, match=r"argument 'state': is for 2 sequences, x has b = 3"):
            layer.forward(np.zeros((3, 2, D_MODEL), np.float32), layer.init_state(2))
