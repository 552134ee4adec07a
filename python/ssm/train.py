"""Training a language model from Python: :class:`Trainer`, a model over named mixers (an embedding, pre-norm residual
layers, a final RMSNorm and an untied head), or a Mamba / Mamba-2 checkpoint's model (:meth:`Trainer.from_pretrained`),
with AdamW, a warmup-cosine schedule and gradient clipping. The caller supplies the batches; the training state saves
to and resumes from a safetensors file.

    t = ssm.train.Trainer(vocab=64, d_model=64, mixers=["mamba2", "attention"], lr=3e-3, steps=2000)
    for step in range(2000):
        ids, targets = next(batches)          # (b, l) and (b, l) int64; -100 in targets: not counted
        r = t.step(ids, targets)              # {"loss", "accuracy", "lr", "grad_norm", "step", ...}
    t.save("run.safetensors")                 # t.load(...) resumes exactly
    logits = t.logits(ids)                    # (b, l, vocab) float32, of ids' framework

Fine-tuning a Mamba or Mamba-2 checkpoint: the trainer starts from its weights (the same logits), and to_model() gives
the checkpoint model back with the trained ones:

    t = ssm.train.Trainer.from_pretrained("mamba-130m-hf", lr=1e-4, steps=500)
    ...                                       # t.step(ids, targets) as above
    t.to_model().save("mamba-130m-tuned")     # a Hugging Face checkpoint again
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Union

from ._arrays import _to_numpy, converter
from ._ext import Error, Mamba2LM, MambaLM, Trainer


def _logits(self: Trainer, ids: Any) -> Any:
    """Logits (b, l, vocab) float32 for ids (b, l) int32/int64, as an array of ids' framework."""
    return converter(ids)(self.logits_capsule(ids))


def _parameters(self: Trainer) -> Dict[str, Any]:
    """Every parameter by name, each a flat float32 NumPy copy."""
    return {name: _to_numpy(self.parameter_capsule(name)) for name in self.parameter_names()}


def _from_pretrained(path: Union[str, os.PathLike], **rates: Any) -> Trainer:
    """A trainer fine-tuning the checkpoint directory at ``path`` (Mamba or Mamba-2: :func:`ssm.load_model`), with the
    rates of :meth:`Trainer.from_model` (lr, min_lr, warmup, steps, weight_decay, clip_norm)."""
    from .models import load_model

    path = os.fspath(path)
    try:  # refuse a model that cannot train before loading its weights (load_model names a missing file)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError):
        model_type = None
    if model_type in ("rwkv", "jamba", "stripedhyena"):
        raise Error(f"Trainer.from_pretrained: argument 'path': {path!r} holds a {model_type} model; only Mamba and "
                    "Mamba-2 checkpoints can be fine-tuned")
    lm = load_model(path)
    if not isinstance(lm, (MambaLM, Mamba2LM)):
        raise Error(f"Trainer.from_pretrained: argument 'path': {path!r} holds a {type(lm).__name__}; only Mamba and "
                    "Mamba-2 checkpoints can be fine-tuned")
    return Trainer.from_model(lm, **rates)


Trainer.logits = _logits
Trainer.parameters = _parameters
Trainer.from_pretrained = staticmethod(_from_pretrained)

__all__ = ["Trainer"]
