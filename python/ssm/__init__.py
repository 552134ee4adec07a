"""ssm: state-space sequence layers from the ssm C++ library.

Ops (selective scan, SSD, linear attention, the delta rule, RWKV-4, RWKV-7, TTT-Linear, the mixture of experts, Hyena,
causal conv1d, attention, RMSNorm, linear) take NumPy
arrays, PyTorch tensors, JAX arrays or any DLPack producer without copying them, and return arrays of the first
argument's framework that own memory the library allocated (handed over through DLPack, not copied). Bad input
raises :class:`ssm.Error` (a ``ValueError``) whose message names the operation and the argument. :mod:`ssm.torch`
has the autograd functions; :mod:`ssm.layers` has the mixing layers (Mamba, Mamba-2, DeltaNet, linear attention /
RetNet, softmax attention); :mod:`ssm.train` trains a language model over named mixers; :class:`MambaLM`,
:class:`Mamba2LM`, :class:`RwkvLM`, :class:`JambaLM`, :class:`StripedHyenaLM` and :class:`Tokenizer` load Hugging Face
checkpoints. See docs/python.md.
"""

from ._ext import Error, JambaLM, Mamba2LM, MambaLM, RwkvLM, StripedHyenaLM, Tokenizer, backends, view_info
from .ops import (
    attention,
    attention_backward,
    causal_conv1d,
    causal_conv1d_backward,
    delta_rule,
    delta_rule_backward,
    glu,
    hyena,
    hyena_backward,
    linear,
    linear_attention,
    linear_attention_backward,
    long_conv,
    moe,
    moe_backward,
    moe_load_balancing_loss,
    rms_norm,
    rwkv4,
    rwkv4_backward,
    rwkv7,
    rwkv7_backward,
    selective_scan,
    selective_scan_backward,
    ssd,
    ssd_backward,
    ttt_linear,
    ttt_linear_backward,
)
from .models import load_model, logits
from . import layers
from . import train

__version__ = "0.1.0"

__all__ = [
    "Error",
    "MambaLM",
    "Mamba2LM",
    "RwkvLM",
    "JambaLM",
    "StripedHyenaLM",
    "Tokenizer",
    "backends",
    "view_info",
    "attention",
    "attention_backward",
    "layers",
    "train",
    "causal_conv1d",
    "causal_conv1d_backward",
    "delta_rule",
    "delta_rule_backward",
    "glu",
    "hyena",
    "hyena_backward",
    "linear",
    "linear_attention",
    "linear_attention_backward",
    "load_model",
    "long_conv",
    "logits",
    "moe",
    "moe_backward",
    "moe_load_balancing_loss",
    "rms_norm",
    "rwkv4",
    "rwkv4_backward",
    "rwkv7",
    "rwkv7_backward",
    "selective_scan",
    "selective_scan_backward",
    "ssd",
    "ssd_backward",
    "ttt_linear",
    "ttt_linear_backward",
]
