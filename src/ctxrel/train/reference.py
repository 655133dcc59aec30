"""The reference model of a preference or RL stage: the stage's initial trainable weights, kept aside.

`snapshot` takes them (saved beside the run so a resumed stage uses the same reference); `reference_logps` swaps
them into the model for one forward without gradients and swaps the trained weights back. The frozen weights are
shared: with LoRA only the adapter tensors are copied (with no previous adapter, the fresh one, whose zero B
matrices leave the base model), in full / qk modes the trainable tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def snapshot(model, path: Path, *, fresh: bool, main: bool) -> dict[str, Any]:
    """The reference weights of a dpo or grpo stage: the trainable tensors as they are now (a stage's start: saved to
    `path`), or as saved (a resumed stage)."""
    from safetensors.torch import load_file, save_file

    from ctxrel.models.loading import trainable_state

    if fresh or not path.exists():
        state = {n: t.clone() for n, t in trainable_state(model).items()}
        if main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("." + path.name)
            save_file(state, str(tmp))
            tmp.replace(path)
        return state
    return load_file(str(path))


def reference_logps(s, reference: dict[str, Any], ids, mask, labels, per_sequence: str):
    """Log-probs under the reference weights (as `ResponseLoss(per_sequence=...)` gives them): swapped into the trainable tensors, a forward without
    gradients, swapped back (the frozen weights are shared with the policy)."""
    import torch

    module = s.acc.unwrap_model(s.wrapped)
    params = dict(s.model.named_parameters())
    training = s.model.training
    s.model.eval()  # the reference runs without dropout
    with torch.no_grad():
        current = {n: params[n].detach().clone() for n in reference}
        try:
            for n, t in reference.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
            return module(ids, mask, labels, per_sequence=per_sequence).detach()
        finally:
            for n, t in current.items():
                params[n].copy_(t)
            s.model.train(training)
