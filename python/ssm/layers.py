"""Sequence-mixing layers of the library, f32 on the CPU, each made from its config with the published
initialization and a seed: :class:`MambaBlock`, :class:`Mamba2Block`, :class:`DeltaNet` (``gated=True``: Gated
DeltaNet), :class:`LinearAttention` (:meth:`LinearAttention.retnet`, :meth:`LinearAttention.katharopoulos`,
:meth:`LinearAttention.gla`), :class:`Rwkv4` (RWKV-4's time or channel mixing), :class:`Rwkv7` (RWKV-7's time
mixing), :class:`TTTLinear` and
:class:`MultiHeadAttention` (softmax attention; its state is a KV cache).

``layer.forward(x)`` maps x (b, l, d_model) float32 to (b, l, d_model) in x's framework (NumPy, PyTorch or JAX),
from a zero state. With ``state = layer.init_state(b)``, ``layer.forward(x, state)`` continues from the state and
leaves it after the last token: a prompt, then one token at a time, gives what one forward over the whole sequence
gives. These are inference layers (no gradients); ``ssm.torch`` has the differentiable ops.
"""

from __future__ import annotations

from typing import Any, Optional

from ._arrays import converter
from ._ext import (
    AttentionState,
    DeltaNet,
    DeltaNetState,
    LinearAttention,
    LinearAttentionState,
    Mamba2Block,
    Mamba2State,
    MambaBlock,
    MambaState,
    MultiHeadAttention,
    Rwkv4,
    Rwkv4State,
    Rwkv7,
    Rwkv7State,
    TTTLinear,
    TTTLinearState,
)


def forward(layer: Any, x: Any, state: Optional[Any] = None) -> Any:
    """x (b, l, d_model) float32 -> (b, l, d_model) of x's framework; with a state, continues from it and updates
    it."""
    return converter(x)(layer.forward_capsule(x, state))


def _retnet(cls: Any, d_model: int, heads: int, **kwargs: Any) -> LinearAttention:
    """RetNet's multi-scale retention (no xPos): the decay 1 - 2^(-5-h) per head, head_v_dim = 2 d_model / heads,
    per-head RMSNorm and a SiLU output gate."""
    return cls(d_model, heads=heads, head_v_dim=2 * (d_model // heads), retention=True, output_norm=True,
               output_gate=True, **kwargs)


def _katharopoulos(cls: Any, d_model: int, heads: int, **kwargs: Any) -> LinearAttention:
    """Katharopoulos et al.'s linear attention: feature map elu + 1 and the normalizer."""
    return cls(d_model, heads=heads, feature_map="elu_plus_one", normalize=True, **kwargs)


def _gla(cls: Any, d_model: int, heads: int, **kwargs: Any) -> LinearAttention:
    """Gated linear attention (Yang et al. 2024): a data-dependent decay per key channel from a low-rank gate
    (logsigmoid / 16), head_dim = d_model / (2 heads), head_v_dim = d_model / heads, per-head RMSNorm and a SiLU
    output gate."""
    return cls(d_model, heads=heads, head_dim=d_model // 2 // heads, head_v_dim=d_model // heads, gated=True,
               output_norm=True, output_gate=True, **kwargs)


for _cls in (MambaBlock, Mamba2Block, DeltaNet, LinearAttention, MultiHeadAttention, Rwkv4, Rwkv7, TTTLinear):
    _cls.forward = forward  # layer.forward(x[, state]): the method form
LinearAttention.retnet = classmethod(_retnet)
LinearAttention.katharopoulos = classmethod(_katharopoulos)
LinearAttention.gla = classmethod(_gla)

__all__ = [
    "AttentionState",
    "DeltaNet",
    "DeltaNetState",
    "LinearAttention",
    "LinearAttentionState",
    "Mamba2Block",
    "Mamba2State",
    "MambaBlock",
    "MambaState",
    "MultiHeadAttention",
    "Rwkv4",
    "Rwkv4State",
    "Rwkv7",
    "Rwkv7State",
    "TTTLinear",
    "TTTLinearState",
]
