"""Figures of the probes (analysis/probes.py summaries): weight change per layer and module, context attention
per layer and head at the peak and at the end, logit-lens log-odds against layer. No model, no file reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxrel.analysis.probes import pick_steps
from ctxrel.report.canvas import figure, line, save, style


def _heat(fig, ax, matrix, *, title: str, xlabels: list[str] | None = None, cmap: str = "viridis",
          vmin: float | None = None, vmax: float | None = None) -> None:
    m = np.array(matrix, dtype=float)
    im = ax.imshow(m, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("layer", fontsize=8.5)
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7.5)
    ax.tick_params(labelsize=7.5)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if xlabels is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=7)


def plot_weights(group: dict[str, Any], path: Path) -> Path | None:
    """Layer x module heat maps of ||ΔW||_F / ||W_0||_F at up to five checkpoints (one colour scale), and the q/k
    share of the squared change against step beside the followed conflict metric."""
    w = group.get("weights")
    if not w:
        return None
    steps = [s for s in pick_steps([s for s in w["steps"] if s > 0] or w["steps"], 5)]
    mats = [w["relative"][w["steps"].index(s)] for s in steps]
    vmax = float(np.nanmax(mats)) if np.isfinite(np.nanmax(mats)) else 1.0
    fig, axes = figure(len(steps) + 1, w=3.0, h=3.9)
    for ax, s, m in zip(axes, steps, mats):
        _heat(fig, ax, m, title=f"step {s}", xlabels=w["modules"], vmin=0.0, vmax=vmax or 1.0)
    ax = axes[len(steps)]
    line(ax, w["qk_share"], "tab:green", "q/k share of ||ΔW||²", band=False)
    bench = next(iter(group["benchmarks"].values()), None)
    if bench and bench["series"].get("all"):
        twin = ax.twinx()
        metric = bench["metric"]
        line(twin, bench["series"]["all"][metric], "tab:blue", f"{bench['benchmark']} {metric}", band=False,
              dashed=True)
        twin.set_ylabel(metric, fontsize=8.5, color="tab:blue")
        twin.tick_params(labelsize=7.5)
        twin.legend(fontsize=7, loc="lower right")
    ax.set_ylim(-0.02, 1.02)
    style(ax, "training step", "share (0-1)")
    ax.set_title("q/k share of the change", fontsize=9)
    fig.suptitle(f"{group['label']}: weight change ||ΔW||_F / ||W_0||_F per layer and module", fontsize=10)
    return save(fig, path)


def plot_heads(group: dict[str, Any], bench: str, path: Path) -> Path | None:
    """Context attention per layer and head at the two checkpoints, their difference, and the heads that moved
    most (boxed when the paired bootstrap CI of the change excludes 0)."""
    h = group["benchmarks"][bench].get("probes", {}).get("heads")
    if not h:
        return None
    before, after = np.array(h["before"]), np.array(h["after"])
    vmax = float(np.nanmax([before, after]))
    fig, axes = figure(3, w=4.0, h=4.0)
    _heat(fig, axes[0], before, title=f"step {h['from_step']}", vmin=0, vmax=vmax)
    _heat(fig, axes[1], after, title=f"step {h['to_step']}", vmin=0, vmax=vmax)
    diff = after - before
    lim = float(np.nanmax(np.abs(diff))) or 1.0
    _heat(fig, axes[2], diff, title=f"change (step {h['to_step']} - step {h['from_step']})", cmap="coolwarm",
          vmin=-lim, vmax=lim)
    from matplotlib.patches import Rectangle

    for c in h["changes"]:
        if c["significant"]:
            axes[2].add_patch(Rectangle((c["head"] - 0.5, c["layer"] - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
    for ax in axes:
        ax.set_xlabel("head", fontsize=8.5)
    top = "; ".join(f"L{c['layer']}H{c['head']} {c['change']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                    for c in h["changes"][:4])
    fig.suptitle(f"{group['label']} {bench}: attention from the answer position to the context, per head\n"
                 f"largest changes (95% paired bootstrap CI over items): {top}", fontsize=9)
    return save(fig, path)


def plot_lens(group: dict[str, Any], bench: str, path: Path) -> Path | None:
    """Mean log-odds of the context answer's first token against the parametric one's, read at every layer,
    one curve per checkpoint (light = early, dark = late)."""
    lens = group["benchmarks"][bench].get("probes", {}).get("lens")
    if not lens:
        return None
    from matplotlib import colormaps

    fig, axes = figure(1, w=7.0, h=4.2)
    ax = axes[0]
    cmap = colormaps["viridis_r"]
    curves = lens["curves"]
    for k, c in enumerate(curves):
        color = cmap(0.15 + 0.85 * k / max(1, len(curves) - 1))
        xs = list(range(len(c["mean"])))
        ax.plot(xs, c["mean"], "-o", ms=2.5, lw=1.3, color=color,
                label=f"step {c['step']}" + (f" (cross {c['cross_layer']:.1f})" if c["cross_layer"] is not None
                                             else ""))
        if k in (0, len(curves) - 1):
            ax.fill_between(xs, c["ci_low"], c["ci_high"], color=color, alpha=0.12, lw=0)
    ax.axhline(0, color="black", lw=0.7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    style(ax, "layer (output of decoder layer k)", "log p(context 1st token) - log p(parametric 1st token)")
    ax.set_title(f"{group['label']} {bench}: logit lens, n={curves[-1]['n']} items (band: 95% CI, first and "
                 "last step)", fontsize=9)
    return save(fig, path)


def plot_probes(groups: list[dict[str, Any]], benches: list[str], out: Path
                ) -> tuple[dict[str, list[Path]], list[Path]]:
    """({benchmark: [heads, lens PNGs]}, [weights PNGs]) for every group with probe rows; file names carry the
    group label when several groups are compared."""
    per_bench: dict[str, list[Path]] = {}
    weights = []
    for g in groups:
        tag = "" if len(groups) == 1 else "-" + "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in g["label"])
        p = plot_weights(g, out / f"probe-weights{tag}.png")
        if p is not None:
            weights.append(p)
        for b in benches:
            safe = b.replace("/", "_")
            made = [plot_heads(g, b, out / f"{safe}-heads{tag}.png"), plot_lens(g, b, out / f"{safe}-lens{tag}.png")]
            per_bench.setdefault(b, []).extend(p for p in made if p is not None)
    return per_bench, weights
