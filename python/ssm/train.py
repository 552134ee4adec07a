"""Training a language model from Python: :class:`Trainer`, a model over named mixers (an embedding, pre-norm residual
layers, a final RMSNorm and an untied head) with AdamW, a warmup-cosine schedule and gradient clipping. The caller
supplies the batches; the training state saves to and resumes from a safetensors file.

    t = ssm.train.Trainer(vocab=64, d_model=64, mixers=["mamba2", "attention"], lr=3e-3, steps=2000)
    for step in range(2000):
        ids, targets = next(batches)          # (b, l) and (b, l) int64; -100 in targets: not counted
        r = t.step(ids, targets)              # {"loss", "accuracy", "lr", "grad_norm", "step", ...}
    t.save("run.safetensors")                 # t.load(...) resumes exactly
    logits = t.logits(ids)                    # (b, l, vocab) float32, of ids' framework
"""

from __future__ import annotations

from typing import Any, Dict

from ._arrays import _to_numpy, converter
from ._ext import Trainer


def _logits(self: Trainer, ids: Any) -> Any:
    """Logits (b, l, vocab) float32 for ids (b, l) int32/int64, as an array of ids' framework."""
    return converter(ids)(self.logits_capsule(ids))


def _parameters(self: Trainer) -> Dict[str, Any]:
    """Every parameter by name, each a flat float32 NumPy copy."""
    return {name: _to_numpy(self.parameter_capsule(name)) for name in self.parameter_names()}


Trainer.logits = _logits
Trainer.parameters = _parameters

__all__ = ["Trainer"]
