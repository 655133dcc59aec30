"""Presets reproducing the study's theory results with the one-layer simulator, and the `ctxrel theory` driver.

Each preset (configs/theory/*.yaml, through `ctxrel.config.shipped`: `base: theorem1` and a few keys) is a
TheoryRunConfig: the simulator's keys, optional comparison variants (the same setup with a few keys changed),
and the sign prediction it must show (`check`, one of CHECKS), checked on the simulated series. `run_theory` simulates, writes a run
directory (config.yaml, metrics.sqlite/.csv, check.json, theory.png) and returns the series and the check.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ctxrel.config.flags import option
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import step_name

Series = dict[str, dict[str, list[float]]]  # subset -> metric -> value per step (index = step)


@dataclass
class Preset:
    claim: str  # what the study says and this preset shows
    overrides: dict[str, Any]  # on top of TheoryConfig defaults
    check: Callable[[dict[str, Series]], dict[str, Any]]  # variant -> series  =>  {"passed": bool, numbers...}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> overrides on top of the preset


# -- checks (pure: series in, verdict out) ------------------------------------------------------------------

def check_prop1(runs: dict[str, Series]) -> dict[str, Any]:
    """Proposition 1: the first GD step moves attention toward the context (C points dominate the gradient at
    init); the second moves it back toward the subject (once C points sit at high context attention, their
    push saturates while C+S points, whose loss rose, pull to the subject). Shown on held-out conflict inputs
    and on the shared score direction theta_C - theta_S."""
    s = runs["main"]
    a = s["conflict"]["attn_context"]
    gap = s["model"]["score_gap_theta"]
    d1, d2 = a[1] - a[0], a[2] - a[1]
    g1, g2 = gap[1] - gap[0], gap[2] - gap[1]
    return {"passed": d1 > 0.05 and d2 < -0.005 and g1 > 0 and g2 < 0,
            "attn_context_step0": a[0], "attn_context_step1": a[1], "attn_context_step2": a[2],
            "delta_step1": d1, "delta_step2": d2, "gap_delta_step1": g1, "gap_delta_step2": g2}


def check_prop2(runs: dict[str, Series], k: int = 5) -> dict[str, Any]:
    """Proposition 2: with S points restating the C+S facts (W_V trained), attention on conflict inputs drifts
    more toward the subject and M_C is lower, at every step from 2 on (step 1 is identical: S points have no
    attention gradient, they act through W_V)."""
    w, wo = runs["main"]["conflict"], runs["no_s"]["conflict"]
    k = min(k, len(w["attn_subject"]) - 1)  # a run shortened by steps=... is checked at its last step
    steps = range(2, len(w["attn_subject"]))
    more_subject = all(w["attn_subject"][t] > wo["attn_subject"][t] for t in steps)
    lower_mc = all(w["m_c"][t] < wo["m_c"][t] for t in steps)
    diff_k = w["attn_subject"][k] - wo["attn_subject"][k]
    return {"passed": more_subject and lower_mc and diff_k > 0.02,
            f"attn_subject_step{k}_with_s": w["attn_subject"][k], f"attn_subject_step{k}_without_s":
            wo["attn_subject"][k], f"m_c_step{k}_with_s": w["m_c"][k], f"m_c_step{k}_without_s": wo["m_c"][k]}


def check_prop3(runs: dict[str, Series]) -> dict[str, Any]:
    """Proposition 3: training W_V makes the (unknown) subjects of C points predictive of their answers
    (positive readout margin); training W_KQ alone leaves the subject readout at exactly 0."""
    kqv = runs["main"]["C"]["subject_readout"]
    kq = runs["kq_only"]["C"]["subject_readout"]
    return {"passed": kqv[0] == 0 and kqv[-1] > 0.01 and max(abs(x) for x in kq) < 1e-12,
            "readout_end_kq_v": kqv[-1], "readout_end_kq_only": kq[-1]}


def trajectory(mc: list[float]) -> dict[str, Any]:
    peak = max(range(len(mc)), key=mc.__getitem__)
    return {"m_c_step0": mc[0], "peak_step": peak, "m_c_peak": mc[peak], "m_c_end": mc[-1], "end_step":
            len(mc) - 1, "rise": mc[peak] - mc[0], "drop": mc[peak] - mc[-1]}


def check_theorem1(runs: dict[str, Series], margin: float = 0.03) -> dict[str, Any]:
    """Theorem 1: M_C on conflict inputs rises, peaks strictly inside the run, then falls by > margin."""
    t = trajectory(runs["main"]["conflict"]["m_c"])
    t["passed"] = 0 < t["peak_step"] < t["end_step"] and t["rise"] > margin and t["drop"] > margin
    return t


def check_mitigation(runs: dict[str, Series], tol: float = 0.005) -> dict[str, Any]:
    """Mitigation: without C+S points M_C rises and does not fall (end >= peak - tol)."""
    t = trajectory(runs["main"]["conflict"]["m_c"])
    t["passed"] = t["rise"] > 0.03 and t["drop"] <= tol
    return t


# -- presets: configs/theory/*.yaml (ctxrel.config.shipped), each naming its check ---------------------------------

CHECKS: dict[str, Callable[[dict[str, Series]], dict[str, Any]]] = {
    "prop1": check_prop1, "prop2": check_prop2, "prop3": check_prop3, "theorem1": check_theorem1,
    "mitigation": check_mitigation}


def _theory_config():
    from ctxrel.theory.onelayer import TheoryConfig

    return TheoryConfig


@dataclass
class TheoryRunConfig(_theory_config()):
    """`ctxrel theory`'s config: the simulator's keys (TheoryConfig), the prediction to check, and the variants
    simulated next to it."""
    check: str = option("theorem1", choices=tuple(CHECKS))  # the sign prediction checked on the series
    claim: str = ""  # what the study says and this run shows (printed, and written to check.json)
    # comparison runs: variant name -> the keys that differ from this config, e.g. {no_s: {n_s: 0}}
    variants: dict[str, dict[str, Any]] = option(factory=dict)
    out: str | None = None  # run directory (None = runs/theory-PRESET)


def _keys(cfg) -> dict[str, Any]:
    """The simulator's keys of a theory config (TheoryConfig's fields)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(_theory_config())}


# -- driver -------------------------------------------------------------------------------------------------

def resolve(preset: str, overrides: dict[str, Any] | list[str] = (),
            settings: dict[str, Any] | None = None) -> TheoryRunConfig:
    """The config of `preset` (a name under configs/theory, or a YAML file) with overrides applied: KEY=VALUE
    strings, or typed values by key (a dict), then `settings` (CLI flags). Unknown keys and bad values are user
    errors."""
    from ctxrel.config.settings import load_config

    if isinstance(overrides, dict):
        overrides, settings = [], {**overrides, **(settings or {})}
    cfg = load_config(TheoryRunConfig, preset, list(overrides), settings, verb="theory")
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """The simulator's own limits, and every variant's keys, before anything runs."""
    from ctxrel.config.settings import from_dict
    from ctxrel.theory.onelayer import LOSS_NORM_CHOICES, TRAIN_CHOICES

    for key, choices in (("train", TRAIN_CHOICES), ("loss_norm", LOSS_NORM_CHOICES)):
        if getattr(cfg, key) not in choices:
            raise CtxrelError(f"config key theory.{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    if cfg.n_answers < 2 or cfg.steps < 2 or min(cfg.n_c, cfg.n_cs, cfg.n_s, cfg.n_c_subjects) < 0:
        raise CtxrelError("theory config: need n_answers >= 2, steps >= 2 and non-negative point counts")
    if cfg.n_conflict < 1 or cfg.n_c + cfg.n_cs == 0:
        raise CtxrelError("theory config: need n_conflict >= 1 and some C or C+S points to train on")
    for name, extra in cfg.variants.items():
        if not isinstance(extra, dict):
            raise CtxrelError(f"config key variants.{name}: expected a mapping of keys to change, got {extra!r}")
        from_dict(_theory_config(), {**_keys(cfg), **extra}, f"variants.{name}.")


def to_series(history: list[dict[str, dict[str, float]]]) -> Series:
    out: Series = {}
    for state in history:
        for subset, metrics in state.items():
            for metric, value in metrics.items():
                out.setdefault(subset, {}).setdefault(metric, []).append(value)
    return out


def metric_rows(series: Series, benchmark: str, sizes: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for subset, metrics in series.items():
        for metric, values in metrics.items():
            for t, v in enumerate(values):
                rows.append({"checkpoint": step_name(t), "step": t, "benchmark": benchmark, "subset": subset,
                             "metric": metric, "value": v, "n": sizes.get(subset)})
    return rows


def plot(runs: dict[str, Series], path: Path, title: str) -> Path | None:
    """Attention on context / subject (conflict inputs, C+S points) and M_C against step; variants dashed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in runs.items():
        ls, tag = ("-", "") if name == "main" else ("--", f" [{name}]")
        steps = range(len(s["conflict"]["m_c"]))
        ax1.plot(steps, s["conflict"]["attn_context"], ls, color="tab:blue", label=f"conflict: context{tag}")
        ax1.plot(steps, s["conflict"]["attn_subject"], ls, color="tab:red", label=f"conflict: subject{tag}")
        if "C+S" in s:
            ax1.plot(steps, s["C+S"]["attn_context"], ls, color="tab:cyan", alpha=.7, label=f"C+S: context{tag}")
        ax2.plot(steps, s["conflict"]["m_c"], ls, color="black", label=f"M_C{tag}")
    ax1.set(xlabel="step", ylabel="mean attention", ylim=(0, 1), title="attention from the relation token")
    ax2.set(xlabel="step", ylabel="M_C = p_ctx / (p_ctx + p_par)", title="context reliance on conflicts")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_theory(preset, out: str | Path | None = None, *, name: str | None = None, **overrides) -> dict[str, Any]:
    """Simulate a theory config (a TheoryRunConfig, or a preset name with `overrides` by key) and its comparison
    variants, write the run directory, check the sign prediction.

    Returns {"preset", "claim", "config", "series": {variant: series}, "check": {...}, "plot", "seconds"}.
    """
    from ctxrel.rundir.files import RunDir, atomic_write_text
    from ctxrel.theory.onelayer import simulate

    t0 = time.perf_counter()
    if isinstance(preset, str):
        name, cfg = name or preset, resolve(preset, overrides)
    else:
        name, cfg = name or "config", preset
    out = out or cfg.out or f"runs/theory-{name}"
    base = _theory_config()(**_keys(cfg))
    configs = {"main": base}
    for variant, extra in cfg.variants.items():
        configs[variant] = dataclasses.replace(base, **extra)
    runs = {variant: to_series(simulate(c)) for variant, c in configs.items()}
    check = CHECKS[cfg.check](runs)

    from ctxrel.rundir import marker as run_marker

    run_marker.claim(out, "theory", verb="theory")  # released when the command ends
    run = RunDir(out)
    run.write_config({"verb": "theory", "preset": name, "claim": cfg.claim, "check": cfg.check,
                      "theory": dataclasses.asdict(base), "variants": dict(cfg.variants)})
    rows = []
    for variant, series in runs.items():
        c = configs[variant]
        sizes = {"C": c.n_c, "C+S": c.n_cs, "S": c.n_s, "conflict": c.n_conflict}
        rows += metric_rows(series, "theory" if variant == "main" else f"theory:{variant}", sizes)
    run.write_metrics(rows)
    atomic_write_text(run.path / "check.json", json.dumps({"preset": name, "claim": cfg.claim, **check},
                                                          indent=1))
    png = plot(runs, run.path / "theory.png", f"{name}: {cfg.claim}")
    return {"preset": name, "claim": cfg.claim, "config": dataclasses.asdict(base), "series": runs,
            "check": check, "plot": str(png) if png else None, "seconds": time.perf_counter() - t0}


def _load_presets() -> dict[str, Preset]:
    """name -> Preset of every shipped theory preset (the table tests and notebooks index by name)."""
    from ctxrel.config.shipped import names, short

    out = {}
    for full in names("theory"):
        cfg = resolve(short(full), {})
        out[short(full)] = Preset(cfg.claim, _keys(cfg), CHECKS[cfg.check], dict(cfg.variants))
    return out


PRESETS: dict[str, Preset] = _load_presets()
