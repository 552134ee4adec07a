"""Arrays out of the extension: a DLPack capsule that owns library memory becomes an array of the caller's framework.

The extension returns every array it allocates as a DLPack capsule ("dltensor"). These helpers hand the capsule to
PyTorch when the call's first array argument was a PyTorch tensor, to JAX when it was a jax.Array, and to NumPy
otherwise; none of them copies. NumPy arrays made this way are writable.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from . import _ext


class Exported:
    """A DLPack capsule from the library, wrapped in the DLPack protocol (``__dlpack__``, ``__dlpack_device__``) so
    that any consumer (``numpy.from_dlpack``, ``torch.from_dlpack``, ``jax.dlpack.from_dlpack``) can take it once."""

    __slots__ = ("_capsule",)

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Optional[bool] = None) -> Any:
        capsule, self._capsule = self._capsule, None
        if capsule is None:
            raise BufferError("ssm: this DLPack capsule was already consumed")
        return capsule

    def __dlpack_device__(self) -> tuple:
        return (1, 0)  # kDLCPU: the library allocates host memory in this build


def _to_numpy(capsule: Any) -> Optional[np.ndarray]:
    # A writable array over the capsule's memory (numpy.from_dlpack before NumPy 2 returns read-only arrays).
    return None if capsule is None else _ext.to_numpy(capsule)


def _to_torch(capsule: Any) -> Any:
    if capsule is None:
        return None
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(capsule)


def _to_jax(capsule: Any) -> Any:
    # jax.dlpack.from_dlpack takes objects with __dlpack__; it aliases host memory aligned as the library's
    # (64 bytes), so this is no copy either. JAX arrays are immutable.
    if capsule is None:
        return None
    import jax.dlpack

    return jax.dlpack.from_dlpack(Exported(capsule))


def is_torch(x: Any) -> bool:
    """True for a torch.Tensor (or a subclass such as nn.Parameter), without importing torch."""
    return type(x).__module__.startswith("torch")


def is_jax(x: Any) -> bool:
    """True for a jax.Array (jaxlib's ArrayImpl, or a tracer's concrete value), without importing jax."""
    module = type(x).__module__
    return module.startswith("jaxlib") or module.startswith("jax.")


def converter(like: Any) -> Callable[[Any], Any]:
    """The function that turns the extension's capsules into arrays of `like`'s framework (PyTorch, JAX or NumPy)."""
    if is_torch(like):
        return _to_torch
    return _to_jax if is_jax(like) else _to_numpy
