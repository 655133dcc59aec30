"""Presets of the synthetic lab: YAML files under ctxrel/configs/synth/, each a set of SynthConfig keys, read
through the one preset system (`ctxrel.config.shipped`, `ctxrel.config.settings.load_config`).

A preset may name `base: OTHER` to start from another preset (a mitigation is its base plus one switch, so the
two cannot drift apart). User overrides (`finetune.lr=3e-4`) apply last; unknown keys are errors that list the
valid ones (config.from_dict).
"""

from __future__ import annotations

from typing import Any

from ctxrel.config import shipped as presets


def preset_names() -> list[str]:
    return [presets.short(n) for n in presets.names("synth")]


def preset_data(name: str) -> dict[str, Any]:
    """The preset's keys as nested dicts, its `base` chain resolved."""
    return presets.read_source(name, "synth")


def preset_summary(name: str) -> str:
    """The first sentence of the preset file's header comment (what it is for)."""
    return presets.summary(presets.preset_file(name, "synth"))


def resolve(preset: str | None, overrides: list[str] = (), settings: dict[str, Any] | None = None):
    """SynthConfig of `preset` (a preset name or a YAML file; None = the built-in defaults) with `KEY=VALUE`
    overrides, then `settings` (typed values by key: the CLI flags), applied."""
    from ctxrel.config.settings import load_config
    from ctxrel.synth.lab import SynthConfig, validate

    cfg = load_config(SynthConfig, preset, overrides, settings, verb="synth")
    validate(cfg)
    return cfg
