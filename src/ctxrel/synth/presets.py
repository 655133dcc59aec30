"""Presets of the synthetic lab: YAML files under ctxrel/configs/synth/, each a set of SynthConfig keys.

A preset may name `base: OTHER` to start from another preset (a mitigation is its base plus one switch, so the
two cannot drift apart). User overrides (`finetune.lr=3e-4`) apply last; unknown keys are errors that list the
valid ones (config.from_dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ctxrel.errors import CtxrelError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs" / "synth"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_data(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's keys as nested dicts, its `base` chain resolved."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise CtxrelError(f"unknown synth preset {name!r}; choose one of {', '.join(preset_names())}")
    if name in _seen:
        raise CtxrelError(f"synth preset {name}: `base` chain loops ({' -> '.join(_seen + (name,))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise CtxrelError(f"{path}: invalid YAML: {e}") from None
    base = data.pop("base", None)
    return _merge(preset_data(base, _seen + (name,)), data) if base else data


def preset_summary(name: str) -> str:
    """The first sentence of the preset file's header comment (what it is for)."""
    lines = []
    for line in (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith(("Run:", "Override:")):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines).removeprefix(f"{name}:").strip()
    return text.split(". ")[0].split(": ")[0].rstrip(".")


def resolve(preset: str | None, overrides: list[str] = ()):
    """SynthConfig of `preset` (None = the built-in defaults) with `KEY=VALUE` overrides applied."""
    from ctxrel.config import apply_override, from_dict
    from ctxrel.synth.lab import SynthConfig, validate

    data = preset_data(preset) if preset else {}
    for o in overrides:
        apply_override(data, o)
    cfg = from_dict(SynthConfig, data)
    validate(cfg)
    return cfg
