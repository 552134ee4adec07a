"""JAX arrays in and out, without copies: a jax.Array argument is read in place through DLPack, and results come back
as jax.Arrays that alias the library's memory. Skipped where JAX is not installed; scripts/test_python.sh runs this
file in a second virtual environment with JAX from PyPI (JAX needs a newer NumPy than Debian's PyTorch is built for)."""

import gc

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import ssm  # noqa: E402
from ssm import _arrays, _ext  # noqa: E402


def test_jax_input_is_read_in_place():
    x = jnp.arange(64 * 1024, dtype=jnp.float32).reshape(64, 1024)
    address, shape, strides, dtype, device = ssm.view_info(x)
    assert address == x.unsafe_buffer_pointer()
    assert shape == (64, 1024) and strides == (1024, 1) and dtype == "f32" and device == "cpu"
    b = jnp.zeros((4, 5), dtype=jnp.bfloat16)
    assert ssm.view_info(b)[3] == "bf16" and ssm.view_info(b)[0] == b.unsafe_buffer_pointer()


def test_exported_memory_becomes_a_jax_array_and_is_freed_with_it():
    capsule, address = _ext._export_probe(1 << 20)
    arr = _arrays._to_jax(capsule)
    assert isinstance(arr, jax.Array) and arr.shape == (1 << 20,) and arr.dtype == jnp.float32
    assert arr.unsafe_buffer_pointer() == address  # aliased, not copied
    del capsule
    gc.collect()
    assert _ext._probe_alive()  # the JAX array owns the library's tensor now
    del arr
    gc.collect()
    assert not _ext._probe_alive()


def _scan_inputs(b=2, d=3, n=4, l=37):
    r = np.random.default_rng(0)
    return dict(u=r.standard_normal((b, d, l)), delta=r.uniform(0.1, 0.5, (b, d, l)), A=-r.uniform(0.5, 1, (d, n)),
                B=r.standard_normal((b, 1, n, l)), C=r.standard_normal((b, 1, n, l)), D=r.standard_normal(d),
                z=r.standard_normal((b, d, l)))


def test_ops_take_and_return_jax_arrays():
    inputs = {k: v.astype(np.float32) for k, v in _scan_inputs().items()}
    want = ssm.selective_scan(**inputs)
    got = ssm.selective_scan(**{k: jnp.asarray(v) for k, v in inputs.items()})
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32 and got.shape == want.shape
    assert got.unsafe_buffer_pointer() % 64 == 0  # the library's allocation, handed over
    np.testing.assert_array_equal(np.asarray(got), want)

    x = np.random.default_rng(1).standard_normal((6, 40)).astype(np.float32)
    w = np.linspace(0.5, 1.5, 40, dtype=np.float32)
    got = ssm.rms_norm(jnp.asarray(x), jnp.asarray(w))
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), ssm.rms_norm(x, w))


def test_jax_arguments_get_the_same_errors():
    inputs = {k: jnp.asarray(v.astype(np.float32)) for k, v in _scan_inputs().items()}
    inputs["delta"] = inputs["delta"].astype(jnp.bfloat16)
    with pytest.raises(ssm.Error, match=r"selective_scan: argument 'delta'"):
        ssm.selective_scan(**inputs)
    with pytest.raises(ssm.Error, match=r"rms_norm: argument 'weight'"):
        ssm.rms_norm(jnp.ones((2, 8), jnp.float32), jnp.ones((7,), jnp.float32))
