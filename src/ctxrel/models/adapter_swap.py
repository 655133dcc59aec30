"""One resident base model, many checkpoints: `ctxrel eval --run` swaps each checkpoint's trained weights in place.

Loading the base model for every checkpoint costs about 1 s for SmolLM2 and minutes for a 7B model; the trained
part of a checkpoint is small (a LoRA adapter) or at least known (the tensors a full / qk run saved). So the base
loads once and each checkpoint only replaces what it trained:

* LoRA (`adapter_model.safetensors` + `adapter_config.json`): the first checkpoint wraps the base with PEFT; every
  later one replaces the LoRA tensors (and scaling) in place with PEFT's `hotswap_adapter`, which refuses an
  adapter of another shape or targets (then the adapter is attached afresh, as a new load would).
* full / qk (`trainable.safetensors`): the saved tensors are copied over the resident weights; a tensor that an
  earlier checkpoint overwrote and this one does not hold is restored from the base model's own files first, so
  the model is always exactly base + this checkpoint.

`ResidentModel.load(folder)` returns a model equal to `models.load_model(base, adapter=folder)`
(tests/test_adapter_swap.py checks outputs against a fresh load).
"""

from __future__ import annotations

import json
from pathlib import Path

from ctxrel.core.errors import CtxrelError


def _lora_shape(folder: Path) -> dict:
    """The adapter_config keys that decide whether one LoRA adapter can replace another in place."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    return {k: cfg.get(k) for k in ("peft_type", "r", "target_modules", "modules_to_save", "use_dora",
                                    "fan_in_fan_out", "bias", "layers_to_transform", "rank_pattern",
                                    "alpha_pattern", "use_rslora")}


class ResidentModel:
    """The base model `spec`, loaded once; `load(folder)` turns it into base + that checkpoint."""

    def __init__(self, spec: str, *, device: str | None = None, trust_remote_code: bool = False):
        from ctxrel.models.loading import load_model

        self.spec = spec
        self.base, self.tokenizer, self.name = load_model(spec, device=device,
                                                          trust_remote_code=trust_remote_code)
        self.model = self.base  # what the last `load` returned
        self.lora: dict | None = None  # shape of the adapter now attached
        self.overwritten: set[str] = set()  # full / qk tensors that differ from the base's files
        self._read_base = None
        self.swaps = 0  # in-place swaps so far (the first attach of an adapter is not one)

    def load(self, folder: str | Path):
        folder = Path(folder)
        if (folder / "trainable.safetensors").exists():
            return self._load_tensors(folder)
        from ctxrel.models.loading import attach_adapter

        if self.overwritten:
            raise CtxrelError(f"{folder}: a LoRA checkpoint after a full / qk one in the same run is not supported")
        if self.lora is not None and (folder / "adapter_config.json").exists() and _lora_shape(folder) == self.lora:
            from peft.utils.hotswap import hotswap_adapter

            if not (folder / "adapter_model.safetensors").exists():
                raise CtxrelError(f"{folder}: adapter_model.safetensors missing (pickle adapters are not loaded)")
            hotswap_adapter(self.model, str(folder), adapter_name="default",
                            torch_device=str(next(self.model.parameters()).device))
            self.swaps += 1
            return self.model
        if self.lora is not None:  # another adapter shape: unwrap to the untouched base, attach afresh
            self.base = self.model.unload()
        self.model = attach_adapter(self.base, str(folder))  # validates the folder like a fresh load
        self.model.eval()
        self.lora = _lora_shape(folder)
        return self.model

    def _load_tensors(self, folder: Path):
        import torch
        from safetensors import safe_open

        from ctxrel.models.loading import load_weights

        if self.lora is not None:
            raise CtxrelError(f"{folder}: a full / qk checkpoint after a LoRA one in the same run is not supported")
        with safe_open(str(folder / "trainable.safetensors"), framework="pt") as st:
            names = set(st.keys())
        stale = sorted(self.overwritten - names)
        if stale:  # back to the base for what this checkpoint does not hold
            if self._read_base is None:
                from ctxrel.models.loading import base_weights

                self._read_base = base_weights(self.spec)
            params = dict(self.base.named_parameters())
            with torch.no_grad():
                for n in stale:
                    params[n].copy_(self._read_base(n).to(params[n].device, params[n].dtype))
        load_weights(self.base, folder)  # names checked against the model there
        if self.overwritten:
            self.swaps += 1
        self.overwritten = names
        return self.base
