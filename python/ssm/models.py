"""Language models and the tokenizer: :class:`MambaLM`, :class:`Mamba2LM`, :class:`RwkvLM`, :class:`JambaLM` (Hugging
Face or mamba_ssm checkpoint directories) and :class:`Tokenizer` (tokenizer.json)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

from ._arrays import converter
from ._ext import JambaLM, Mamba2LM, MambaLM, RwkvLM, StripedHyenaLM


def load_model(directory: Union[str, os.PathLike],
               weight_dtype: Optional[str] = None) -> Union[MambaLM, Mamba2LM, RwkvLM, JambaLM, StripedHyenaLM]:
    """Loads a checkpoint directory as :class:`Mamba2LM` when its config.json says Mamba-2 (``model_type`` "mamba2"
    or a Mamba2 architecture), as :class:`RwkvLM` for RWKV-4 (``model_type`` "rwkv"), as :class:`JambaLM` for Jamba
    (``model_type`` "jamba"), as :class:`StripedHyenaLM` for ``model_type`` "stripedhyena" (files the library saved),
    else as :class:`MambaLM`
    (Mamba, FalconMamba, mamba_ssm configs)."""
    directory = os.fspath(directory)
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    archs = config.get("architectures") or []
    if config.get("model_type") == "rwkv":
        return RwkvLM.load(directory, weight_dtype)
    if config.get("model_type") == "jamba":
        return JambaLM.load(directory, weight_dtype)
    if config.get("model_type") == "stripedhyena":
        return StripedHyenaLM.load(directory, weight_dtype)
    mamba2 = config.get("model_type") == "mamba2" or any("Mamba2" in a for a in archs)
    return (Mamba2LM if mamba2 else MambaLM).load(directory, weight_dtype)


def logits(model: Union[MambaLM, Mamba2LM, RwkvLM, JambaLM, StripedHyenaLM], ids: Any) -> Any:
    """Logits for every position: ids (b, l) int32/int64 (NumPy or PyTorch) -> (b, l, padded_vocab) float32 of the
    same framework, in memory the library allocated."""
    return converter(ids)(model.logits_capsule(ids))


for _cls in (MambaLM, Mamba2LM, RwkvLM, JambaLM, StripedHyenaLM):
    _cls.logits = logits  # model.logits(ids): the method form
