"""Arrays cross the boundary without copies: the library reads the caller's memory, and the memory it allocates is
handed over through DLPack and freed when the last owner lets go."""

import gc
import os

import numpy as np
import pytest
import torch

import ssm
from ssm import _ext


def test_numpy_input_is_read_in_place():
    a = np.zeros((64, 1024, 256), dtype=np.float32)  # 64 MiB
    address, shape, strides, dtype, device = ssm.view_info(a)
    assert address == a.ctypes.data
    assert shape == a.shape and strides == (1024 * 256, 256, 1) and dtype == "f32" and device == "cpu"


def test_numpy_strided_input_keeps_its_strides():
    a = np.zeros((8, 10, 12), dtype=np.float64)
    s = a[1:, ::2, 3:].transpose(0, 2, 1)  # offset, step and transpose: still no copy
    address, shape, strides, dtype, _ = ssm.view_info(s)
    assert address == s.ctypes.data
    assert shape == s.shape and strides == tuple(x // 8 for x in s.strides) and dtype == "f64"


def test_readonly_numpy_input_is_accepted():
    a = np.ones((3, 4), dtype=np.float32)
    a.setflags(write=False)
    assert ssm.view_info(a)[0] == a.ctypes.data


def test_torch_input_is_read_in_place():
    t = torch.zeros(64, 1024, 256)  # 64 MiB
    address, shape, strides, dtype, _ = ssm.view_info(t)
    assert address == t.data_ptr() and shape == tuple(t.shape) and strides == t.stride() and dtype == "f32"
    s = t[2:, :, ::4]
    address, shape, strides, _, _ = ssm.view_info(s)
    assert address == s.data_ptr() and shape == tuple(s.shape) and strides == s.stride()
    b = torch.zeros(4, 5, dtype=torch.bfloat16)
    assert ssm.view_info(b)[3] == "bf16" and ssm.view_info(b)[0] == b.data_ptr()


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_exported_memory_is_handed_over_and_freed(framework):
    capsule, address = _ext._export_probe(1 << 20)
    if framework == "numpy":
        arr = _ext.to_numpy(capsule)  # what ssm's functions return for NumPy callers: writable
        assert arr.flags.writeable and arr.ctypes.data == address and arr.shape == (1 << 20,) and arr.dtype == np.float32
    else:
        arr = torch.utils.dlpack.from_dlpack(capsule)
        assert arr.data_ptr() == address and arr.shape == (1 << 20,) and arr.dtype == torch.float32
    del capsule
    gc.collect()
    assert _ext._probe_alive()  # the array owns the library's tensor now
    arr[0] = 3.0
    del arr
    gc.collect()
    assert not _ext._probe_alive()  # and releasing the array freed it


def test_unconsumed_capsule_frees_its_tensor():
    capsule, _ = _ext._export_probe(16)
    assert _ext._probe_alive()
    del capsule
    gc.collect()
    assert not _ext._probe_alive()


def test_exported_capsule_serves_any_from_dlpack_once():
    capsule, address = _ext._export_probe(4)
    e = ssm._arrays.Exported(capsule)
    assert np.from_dlpack(e).ctypes.data == address
    with pytest.raises(BufferError):
        np.from_dlpack(e)
    with pytest.raises(ssm.Error, match=r"to_numpy: argument 'capsule'"):
        _ext.to_numpy(capsule)  # consumed by NumPy above


def _scan_inputs(xp, dtype=np.float32, b=2, d=3, n=4, l=5):
    r = np.random.default_rng(0)
    arrays = dict(u=r.standard_normal((b, d, l)), delta=r.uniform(0.1, 0.5, (b, d, l)), A=-r.uniform(0.5, 1, (d, n)),
                  B=r.standard_normal((b, 1, n, l)), C=r.standard_normal((b, 1, n, l)))
    return {k: xp(v.astype(dtype)) for k, v in arrays.items()}


def test_results_follow_the_first_argument_framework():
    out_np = ssm.selective_scan(**_scan_inputs(np.asarray))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == (2, 3, 5)
    assert out_np.ctypes.data % 64 == 0  # the library's 64-byte aligned allocation, not a NumPy copy
    out_t = ssm.selective_scan(**_scan_inputs(torch.from_numpy))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert out_t.data_ptr() % 64 == 0
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=0, atol=0)


def test_backends_reports_the_cpu():
    info = ssm.backends()
    assert info["cpu"] is True and info["simd"].split("+")[0] in ("avx512", "avx2", "generic")
    assert info["cuda_linked"] in (True, False) and isinstance(info["cuda_status"], str)


def test_the_cuda_backend_is_linked_where_the_build_found_nvcc():
    # scripts/test_python.sh builds with SSM_PYTHON_CUDA=AUTO and says here whether it saw nvcc.
    expected = os.environ.get("SSM_PYTHON_EXPECT_CUDA")
    if expected is None:
        pytest.skip("SSM_PYTHON_EXPECT_CUDA is not set (scripts/test_python.sh sets it)")
    info = ssm.backends()
    assert info["cuda_linked"] is (expected == "1"), info
    if info["cuda_linked"] and not info["cuda_usable"]:
        assert info["cuda_status"].startswith("CUDA runtime error"), info
