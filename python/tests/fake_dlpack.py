"""A DLPack producer, in ctypes, that describes host memory as if it were on another device (CUDA device 0 by
default): what a GPU framework's array looks like to the extension, on a machine without a GPU. The memory is never
the library's to read: tests use it only where the device check stops the call first."""

import ctypes

import numpy as np

KDL_CUDA = 2


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int), ("dtype", _DType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Managed))
_Managed._fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


@_Deleter
def _keep(_):  # the FakeDeviceArray object owns everything; the consumer's release has nothing to free
    pass


class FakeDeviceArray:
    """A float32 array of `shape` whose DLPack description says device (device_type, device_id)."""

    def __init__(self, shape, device_type=KDL_CUDA, device_id=0):
        self.host = np.zeros(shape, np.float32)
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._managed = _Managed()
        t = self._managed.dl_tensor
        t.data = self.host.ctypes.data
        t.device = _Device(device_type, device_id)
        t.ndim = len(shape)
        t.dtype = _DType(2, 32, 1)  # kDLFloat, 32 bits
        t.shape = self._shape
        t.strides = None  # compact row-major
        t.byte_offset = 0
        self._managed.deleter = _keep
        self._device = (device_type, device_id)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        return _capsule_new(ctypes.addressof(self._managed), b"dltensor", None)

    def __dlpack_device__(self):
        return self._device
