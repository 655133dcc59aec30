"""Presets reproducing the study's theory results with the one-layer simulator, and the `ctxrel theory` driver.

Each preset is a set of config overrides, optional comparison variants (the same setup with a few keys changed),
and the sign prediction it must show, checked on the simulated series. `run_theory` simulates, writes a run
directory (config.yaml, metrics.sqlite/.csv, check.json, theory.png) and returns the series and the check.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ctxrel.errors import CtxrelError

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


# -- presets ------------------------------------------------------------------------------------------------

THEOREM1 = {"n_c": 300, "n_cs": 100, "n_answers": 10, "alpha_mem": 4.0, "beta_copy": 1.0, "train": "kq",
            "lr": 50.0, "steps": 60}

PRESETS: dict[str, Preset] = {
    "prop1": Preset(
        "Prop. 1: attention moves toward the context at the first step, toward the subject at the second "
        "(W_KQ only; the step-2 reversal needs a large step size, lr=200, so that one step already saturates "
        "the C points' push; at lr=50 the reversal comes at step ~4)",
        {**THEOREM1, "lr": 200.0, "steps": 5}, check_prop1),
    "prop2": Preset(
        "Prop. 2: adding S points (restating the C+S facts, W_KQ and W_V trained) strengthens the drift to the "
        "subject: more attention on the subject and lower M_C on conflict inputs than without them",
        {**THEOREM1, "n_answers": 100, "n_s": 200, "train": "kq+v", "loss_norm": "context", "lr": 20.0,
         "steps": 10}, check_prop2, {"no_s": {"n_s": 0}}),
    "prop3": Preset(
        "Prop. 3: training W_V makes the subjects of C points predictive of their answers; W_KQ alone does not",
        {**THEOREM1, "train": "kq+v"}, check_prop3, {"kq_only": {"train": "kq"}}),
    "theorem1": Preset(
        "Thm. 1: M_C on conflict inputs rises then falls (300 C + 100 C+S points, memory readout > copy, "
        "W_KQ only, large step size)", dict(THEOREM1), check_theorem1),
    "mitigation": Preset(
        "Mitigation: theorem1 without C+S points; M_C rises and does not fall", {**THEOREM1, "n_cs": 0},
        check_mitigation),
}


# -- driver -------------------------------------------------------------------------------------------------

def resolve(preset: str, overrides: dict[str, Any]):
    """The preset's TheoryConfig with user overrides applied (unknown keys and bad values are user errors)."""
    from ctxrel.config import from_dict
    from ctxrel.theory.onelayer import LOSS_NORM_CHOICES, TRAIN_CHOICES, TheoryConfig

    if preset not in PRESETS:
        raise CtxrelError(f"unknown theory preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = from_dict(TheoryConfig, {**PRESETS[preset].overrides, **overrides}, "theory.")
    for key, choices in (("train", TRAIN_CHOICES), ("loss_norm", LOSS_NORM_CHOICES)):
        if getattr(cfg, key) not in choices:
            raise CtxrelError(f"config key theory.{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    if cfg.n_answers < 2 or cfg.steps < 2 or min(cfg.n_c, cfg.n_cs, cfg.n_s, cfg.n_c_subjects) < 0:
        raise CtxrelError("theory config: need n_answers >= 2, steps >= 2 and non-negative point counts")
    if cfg.n_conflict < 1 or cfg.n_c + cfg.n_cs == 0:
        raise CtxrelError("theory config: need n_conflict >= 1 and some C or C+S points to train on")
    return cfg


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
                rows.append({"checkpoint": f"step-{t:06d}", "step": t, "benchmark": benchmark, "subset": subset,
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


def run_theory(preset: str, out: str | Path, **overrides) -> dict[str, Any]:
    """Simulate a preset (and its comparison variants), write the run directory, check the sign prediction.

    Returns {"preset", "claim", "config", "series": {variant: series}, "check": {...}, "plot", "seconds"}.
    """
    from ctxrel.results import RunDir, atomic_write_text
    from ctxrel.theory.onelayer import simulate

    t0 = time.perf_counter()
    spec = PRESETS.get(preset)
    cfg = resolve(preset, overrides)
    configs = {"main": cfg}
    for name, extra in spec.variants.items():
        configs[name] = dataclasses.replace(cfg, **extra)
    runs = {name: to_series(simulate(c)) for name, c in configs.items()}
    check = spec.check(runs)

    from ctxrel import run_marker

    run_marker.claim(out, "theory", verb="theory")  # released when the command ends
    run = RunDir(out)
    run.write_config({"verb": "theory", "preset": preset, "claim": spec.claim,
                      "theory": dataclasses.asdict(cfg),
                      "variants": {k: v for k, v in spec.variants.items()}})
    rows = []
    for name, series in runs.items():
        c = configs[name]
        sizes = {"C": c.n_c, "C+S": c.n_cs, "S": c.n_s, "conflict": c.n_conflict}
        rows += metric_rows(series, "theory" if name == "main" else f"theory:{name}", sizes)
    run.write_metrics(rows)
    atomic_write_text(run.path / "check.json", json.dumps({"preset": preset, "claim": spec.claim, **check},
                                                          indent=1))
    png = plot(runs, run.path / "theory.png", f"{preset}: {spec.claim}")
    return {"preset": preset, "claim": spec.claim, "config": dataclasses.asdict(cfg), "series": runs,
            "check": check, "plot": str(png) if png else None, "seconds": time.perf_counter() - t0}
