"""Synthetic lab: a generated world of facts, a tiny transformer pretrained on it from scratch, then
instruction-finetuned on C / C+S / S mixtures and scored as a ctxrel study (docs/design.md, 'Parts').
It spans layers (tests/test_layering.py): world and mixture are data, model a model, measure an evaluation, lab
training, and study / lab_presets / cli the `ctxrel synth` verb; each part imports only its own layer or lower.

world.py    facts, subject pools, vocabulary, token formats (pure)
mixture.py  the finetuning mixture and the evaluation sets (pure)
model.py    TinyGPT (nanoGPT-like) with readable attention; loss, greedy decoding, answer log-probs
measure.py  scoring of one checkpoint: conflict records, metric rows, the theory's diagnostics
lab.py      config dataclasses, schedule, training steps, safetensors state
study.py    `run_synth`: pretrain -> finetune -> score -> plot, into a resumable run directory
lab_presets.py  YAML presets under ctxrel/configs/synth (with `base:` inheritance), read through config/
cli.py      the `ctxrel synth` verb
"""

__all__ = ["preset_names", "resolve", "run_synth"]


def __getattr__(name):  # imported on first use: `ctxrel --help` loads synth.cli and must not pay for torch or yaml
    if name == "run_synth":
        from ctxrel.synth.study import run_synth
        return run_synth
    if name in ("preset_names", "resolve"):
        from ctxrel.synth import lab_presets
        return getattr(lab_presets, name)
    raise AttributeError(name)
