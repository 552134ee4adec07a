"""Bad input raises ssm.Error (a ValueError) from the library's ssm::Error, naming the op and the argument."""

import numpy as np
import pytest
import torch

import ssm


def _scan(dtype=np.float32, b=1, d=2, n=3, l=4):
    r = np.random.default_rng(0)
    return dict(u=r.standard_normal((b, d, l)).astype(dtype), delta=r.uniform(0.1, 0.5, (b, d, l)).astype(dtype),
                A=-np.ones((d, n), dtype), B=r.standard_normal((b, n, l)).astype(dtype),
                C=r.standard_normal((b, n, l)).astype(dtype))


def test_error_is_a_value_error():
    assert issubclass(ssm.Error, ValueError)


def test_wrong_dtype_names_the_argument():
    args = _scan()
    args["delta"] = args["delta"].astype(np.float64)
    with pytest.raises(ssm.Error, match=r"selective_scan: argument 'delta': expected dtype f32"):
        ssm.selective_scan(**args)


def test_wrong_dtype_from_torch_names_the_argument():
    x = torch.randn(3, 8, dtype=torch.float64)
    w = torch.ones(8, dtype=torch.float32)
    with pytest.raises(ssm.Error, match=r"rms_norm: argument 'weight'"):
        ssm.rms_norm(x, w)


def test_unsupported_dtype_names_the_argument():
    args = _scan()
    args["u"] = args["u"].astype(np.int16)
    with pytest.raises(ssm.Error, match=r"selective_scan: argument 'u': from_dlpack: unsupported DLPack dtype"):
        ssm.selective_scan(**args)


def test_non_contiguous_names_the_argument():
    b, l, h, p, g, n = 1, 6, 2, 4, 1, 3
    r = np.random.default_rng(1)
    x = r.standard_normal((b, l, h, p)).astype(np.float32)
    dt = r.uniform(0.1, 0.5, (b, l, h)).astype(np.float32)
    A_strided = (-np.ones(2 * h, np.float32))[::2]  # (h) with stride 2
    assert A_strided.strides == (8,)
    B = r.standard_normal((b, l, g, n)).astype(np.float32)
    with pytest.raises(ssm.Error, match=r"ssd: argument 'A': expected a contiguous tensor"):
        ssm.ssd(x, dt, A_strided, B, B)


def test_unit_stride_names_the_argument():
    x = np.ones((4, 16), np.float32)[:, ::2]  # stride 2 along dim
    with pytest.raises(ssm.Error, match=r"rms_norm: argument 'x': expected stride 1 in dimension 1"):
        ssm.rms_norm(x)


def test_wrong_shape_names_the_argument():
    x = torch.randn(2, 3, 10)
    w = torch.randn(3, 5)
    b = torch.randn(4)  # d = 3
    with pytest.raises(ssm.Error, match=r"causal_conv1d: argument 'bias': expected shape \(3\), got \(4\)"):
        ssm.causal_conv1d(x, w, b)


def test_unknown_option_names_the_argument():
    with pytest.raises(ssm.Error, match=r"selective_scan: argument 'path': expected one of 'automatic'"):
        ssm.selective_scan(**_scan(), path="fast")


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ssm.Error, match=r"MambaLM::load"):
        ssm.MambaLM.load(str(tmp_path))


def test_device_arrays_are_described_and_refused_without_a_gpu():
    from fake_dlpack import FakeDeviceArray

    x, w = FakeDeviceArray((2, 8)), FakeDeviceArray((8,))
    address, shape, _, dtype, device = ssm.view_info(x)
    assert address == x.host.ctypes.data and shape == (2, 8) and dtype == "f32" and device == "cuda:0"
    info = ssm.backends()
    if info["cuda_usable"]:
        pytest.skip("a GPU is usable here: these host pointers must not reach a kernel")
    # CUDA linked but no GPU: the runtime's reason; not linked: the build's. Either way an ssm.Error, never a read.
    want = r"CUDA" if info["cuda_linked"] else r"cuda"
    with pytest.raises(ssm.Error, match=want):
        ssm.rms_norm(x, w)
    with pytest.raises(ssm.Error, match=r"selective_scan: argument 'delta'"):  # u on the CPU, delta on cuda:0
        args = _scan()
        args["delta"] = FakeDeviceArray(args["delta"].shape)
        ssm.selective_scan(**args)
