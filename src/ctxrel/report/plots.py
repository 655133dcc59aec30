"""Report figures (PNG) drawn from study summaries (analysis/summary.py); no model, no run directory reads.

Every figure takes a list of summaries ("groups": one run, or the seeds of one study, with a label), so the
same code draws one study or a comparison of mitigations on one figure. Bare `Figure` objects on an Agg canvas:
no pyplot state, nothing left open; files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxrel.report.canvas import figure, line, save, style
from ctxrel.report.probe_plots import plot_probes
from ctxrel.report.share_plots import plot_outcome_shares

METRIC_LABEL = {"cf_acc": "cf-acc", "par_acc": "par-acc", "m_c": "M_C"}
YLABEL = {"cf_acc": "share of generations (0-1)", "m_c": "M_C = p_ctx / (p_ctx + p_par)"}
SUBSET_LABEL = {"all": "all items", "known": "known items (knowledge-filtered)"}
GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                "tab:cyan")


def _colors(groups: list[dict[str, Any]], metric: str) -> list[tuple[str, str]]:
    """(main colour, second colour) per group: one study keeps the blue/red of cf-acc/par-acc; a comparison
    gives each group one colour and tells the metrics apart by line style."""
    if len(groups) == 1:
        return [("tab:purple" if metric == "m_c" else "tab:blue", "tab:red")]
    return [(c, c) for c in (GROUP_COLORS * 4)[:len(groups)]]


def plot_steps(groups: list[dict[str, Any]], bench: str, path: Path) -> Path:
    """cf-acc (solid, 95% band) and par-acc (dashed) vs step, one panel per subset (all, known); the peak of
    the followed metric is starred; epoch ends dotted."""
    subsets = [s for s in ("all", "known") if any(s in g["benchmarks"][bench]["series"] for g in groups)]
    fig, axes = figure(len(subsets))
    metric = groups[0]["benchmarks"][bench]["metric"]
    for ax, subset in zip(axes, subsets):
        ns = []
        for g, (c1, c2) in zip(groups, _colors(groups, metric)):
            b = g["benchmarks"][bench]
            ser = b["series"].get(subset)
            if not ser:
                continue
            prefix = f"{g['label']}: " if len(groups) > 1 else ""
            for k, (m, pts) in enumerate(ser.items()):
                line(ax, pts, c1 if k == 0 else c2, prefix + METRIC_LABEL[m], dashed=k > 0, band=k == 0)
            st = b["subsets"][subset]
            if st.get("peak"):
                ax.plot([st["peak"]["step"]], [st["peak"]["value"]], "*", ms=11, color=c1, mec="black", mew=0.6,
                        label=f"{prefix}peak{' (smoothed %d)' % st['smoothed'] if st.get('smoothed') else ''}")
            ns.append(str(ser[metric][-1]["n"]))
        ax.set_title(f"{bench}: {SUBSET_LABEL[subset]} (n={'/'.join(ns)})", fontsize=9.5)
        style(ax, "training step", YLABEL.get(metric, YLABEL["cf_acc"]), groups[0].get("epoch_boundaries"))
    fig.suptitle(f"{bench}: conflict metrics by training step (band: 95% bootstrap CI over items)", fontsize=10)
    return save(fig, path)


def plot_vs_id(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """cf-acc (M_C) against ID accuracy at the same step, the study's x-axis; None when no run has ID accuracy.
    Each point is a checkpoint (first and last labelled with their step)."""
    have = [g for g in groups if g.get("id_accuracy")]
    if not have:
        return None
    fig, axes = figure(2, w=5.0)
    metric = groups[0]["benchmarks"][bench]["metric"]
    for ax, subset in zip(axes, ("all", "known")):
        for g, (c1, _) in zip(groups, _colors(groups, metric)):
            ids = {d["step"]: d["value"] for d in g.get("id_accuracy") or []}
            ser = g["benchmarks"][bench]["series"].get(subset, {}).get(metric, [])
            pts = [dict(p, x=ids[p["step"]]) for p in ser if p["step"] in ids]
            if not pts:
                continue
            line(ax, pts, c1, g["label"] if len(groups) > 1 else METRIC_LABEL[metric], x="x", band=False)
            for p in (pts[0], pts[-1]):
                ax.annotate(f"step {p['step']}", (p["x"], p["value"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points", color=c1)
        ax.set_title(f"{bench}: {SUBSET_LABEL[subset]}", fontsize=9.5)
        style(ax, "ID accuracy (mean of standard tasks, 0-1)", f"{METRIC_LABEL[metric]} (0-1)")
    fig.suptitle(f"{bench}: {METRIC_LABEL[metric]} against ID accuracy (each point a checkpoint)", fontsize=10)
    return save(fig, path)


def plot_categories(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """Small multiples: the followed metric per category vs step, all items solid, known items dashed."""
    cats = sorted({c for g in groups for c in g["benchmarks"][bench]["category_series"]})
    if not cats:
        return None
    ncols = min(len(cats), 3)
    nrows = -(-len(cats) // ncols)
    fig, axes = figure(ncols, nrows, w=4.4, h=3.2)
    for ax in axes[1:]:
        ax.sharey(axes[0])  # one y scale: categories are compared by eye
    for ax in axes[len(cats):]:
        ax.set_visible(False)
    metric = groups[0]["benchmarks"][bench]["metric"]
    for ax, cat in zip(axes, cats):
        for g, (c1, _) in zip(groups, _colors(groups, metric)):
            cs = g["benchmarks"][bench]["category_series"].get(cat, {})
            prefix = f"{g['label']}: " if len(groups) > 1 else ""
            for subset in ("all", "known"):
                if cs.get(subset):
                    line(ax, cs[subset], c1, f"{prefix}{subset} (n={cs[subset][-1]['n']})",
                          dashed=subset == "known", band=subset == "all")
        ax.set_title(cat or "(no category)", fontsize=9.5)
        style(ax, "training step", f"{METRIC_LABEL[metric]} (0-1)", groups[0].get("epoch_boundaries"))
    fig.suptitle(f"{bench}: {METRIC_LABEL[metric]} per category (solid: all items, dashed: known items)",
                 fontsize=10)
    return save(fig, path)


def plot_attention(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """Mean attention mass from the answer position to context vs question tokens, by step (Fig. 3b)."""
    if not any(g["benchmarks"][bench].get("attention") for g in groups):
        return None
    fig, axes = figure(2, w=5.0)
    for ax, subset in zip(axes, ("all", "known")):
        for g, (c1, c2) in zip(groups, _colors(groups, "cf_acc")):
            att = g["benchmarks"][bench].get("attention", {}).get(subset, {})
            prefix = f"{g['label']}: " if len(groups) > 1 else ""
            line(ax, att.get("attention_context", []), c1, prefix + "to context tokens")
            line(ax, att.get("attention_question", []), c2, prefix + "to question tokens", dashed=True)
        ax.set_title(f"{bench}: {SUBSET_LABEL[subset]}", fontsize=9.5)
        style(ax, "training step", "attention mass (0-1)",
               groups[0].get("epoch_boundaries"))
    fig.suptitle(f"{bench}: attention mass from the answer position, mean over layers and heads", fontsize=10)
    return save(fig, path)


DECODING_COLORS = {"greedy": "tab:blue", "cad": "tab:red", "adacad": "tab:green"}


def _decoding_color(dec: str, k: int) -> str:
    return DECODING_COLORS.get(dec, GROUP_COLORS[(k + 3) % len(GROUP_COLORS)])


def plot_recoverability(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """The followed metric of every decoding method against step (conflict items), one panel per subset."""
    entries = [(g, g.get("mitigation", {}).get(bench)) for g in groups]
    entries = [(g, e) for g, e in entries if e and e["recoverability"]]
    if not entries:
        return None
    subsets = [s for s in ("all", "known") if any(s in e["recoverability"] for _, e in entries)]
    fig, axes = figure(len(subsets))
    metric = entries[0][1]["metric"]
    for ax, subset in zip(axes, subsets):
        for gi, (g, e) in enumerate(entries):
            prefix = f"{g['label']}: " if len(groups) > 1 else ""
            for k, (dec, pts) in enumerate(e["recoverability"].get(subset, {}).items()):
                line(ax, pts, _decoding_color(dec, k), prefix + dec, dashed=gi > 0)
        ax.set_title(f"{bench}: {SUBSET_LABEL[subset]}", fontsize=9.5)
        style(ax, "training step", f"{METRIC_LABEL[metric]} (0-1)", groups[0].get("epoch_boundaries"))
    fig.suptitle(f"{bench}: recoverability — {METRIC_LABEL[metric]} per decoding method (95% bands)", fontsize=10)
    return save(fig, path)


def plot_contexts(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """Accuracy per context kind (one panel each) and decoding method against step: the do-no-harm view."""
    g = next((g for g in groups if g.get("mitigation", {}).get(bench, {}).get("contexts")), None)
    if g is None:
        return None
    ctx = g["mitigation"][bench]["contexts"]
    kinds = [k for k in ("conflict", "gold", "irrelevant") if k in ctx]
    if kinds == ["conflict"] and len(ctx["conflict"]) < 2:
        return None
    fig, axes = figure(len(kinds), w=4.4)
    right = {"conflict": "the context answer", "gold": "the parametric answer", "irrelevant": "the parametric answer"}
    for ax, kind in zip(axes, kinds):
        for k, (dec, pts) in enumerate(ctx[kind].items()):
            line(ax, pts, _decoding_color(dec, k), dec)
        ax.set_title(f"{kind} context: accuracy = {right[kind]}", fontsize=9.5)
        ax.set_ylim(-0.03, 1.03)
        style(ax, "training step", "accuracy (0-1)", g.get("epoch_boundaries"))
    fig.suptitle(f"{bench}: context kinds per decoding method"
                 + (f" ({g['label']})" if len(groups) > 1 else ""), fontsize=10)
    return save(fig, path)


def held_out_lines(g: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The held-out accuracies a reward is read against, {label: points}: greedy cf-acc of each conflict
    benchmark (all items) and, when the study scored them, greedy accuracy under irrelevant contexts."""
    out = {}
    for bench, b in g["benchmarks"].items():
        ser = b["series"].get("all", {})
        if "cf_acc" in ser:
            out[f"{bench}: cf-acc (held out)"] = ser["cf_acc"]
    for bench, m in g.get("mitigation", {}).items():
        irr = m.get("contexts", {}).get("irrelevant", {})
        if "greedy" in irr:
            out[f"{bench}: irrelevant-context accuracy (held out)"] = irr["greedy"]
    return out


def plot_reward(groups: list[dict[str, Any]], path: Path) -> Path | None:
    """The grpo reward per training step beside the held-out accuracies at the scored checkpoints, one panel
    per group; None when no group has a grpo stage. A reward that climbs while cf-acc and irrelevant-context
    accuracy do not is the reward being gamed, not learned."""
    shown = [g for g in groups if g.get("reward")]
    if not shown:
        return None
    fig, axes = figure(len(shown), w=5.6)
    for ax, g in zip(axes, shown):
        reward = [dict(step=r["step"], value=r["reward"]) for r in g["reward"]]
        line(ax, reward, "black", "grpo reward (training batches)", band=False)
        for k, (label, pts) in enumerate(held_out_lines(g).items()):
            line(ax, pts, GROUP_COLORS[k % len(GROUP_COLORS)], label, dashed=True, band=False)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(g["label"], fontsize=9.5)
        style(ax, "training step", "reward / accuracy (0-1)", g.get("epoch_boundaries"))
    fig.suptitle("grpo reward beside the held-out accuracies (the verdicts come from the held-out ones)",
                 fontsize=10)
    return save(fig, path)


def plot_all(groups: list[dict[str, Any]], out: Path) -> dict[str, list[Path]]:
    """Every figure of every benchmark the groups share: {benchmark: [PNG paths]}, named <bench>-<kind>.png."""
    benches = sorted(set.intersection(*(set(g["benchmarks"]) for g in groups)))
    figs: dict[str, list[Path]] = {}
    for b in benches:
        safe = b.replace("/", "_")
        made = [plot_steps(groups, b, out / f"{safe}-steps.png"),
                plot_vs_id(groups, b, out / f"{safe}-vs-id-accuracy.png"),
                plot_categories(groups, b, out / f"{safe}-categories.png"),
                plot_attention(groups, b, out / f"{safe}-attention.png")]
        figs[b] = [p for p in made if p is not None]
        shares = plot_outcome_shares(groups, b, out / f"{safe}-outcomes.png")
        if shares is not None:  # a key of its own: the benchmark's list of figures stays as it was
            figs[OUTCOMES_SECTION.format(b)] = [shares]
    per_bench, weights = plot_probes(groups, benches, out)
    for b, paths in per_bench.items():
        figs[b] += paths
    if weights:
        figs[WEIGHTS_SECTION] = weights
    reward = plot_reward(groups, out / "grpo-reward.png")
    if reward is not None:
        figs[REWARD_SECTION] = [reward]
    for b in sorted(set.intersection(*(set(g.get("mitigation", {})) for g in groups))):  # decoding / context kinds
        safe = b.replace("/", "_")
        made = [plot_recoverability(groups, b, out / f"{safe}-recoverability.png"),
                plot_contexts(groups, b, out / f"{safe}-context-kinds.png")]
        if any(made):
            figs[f"{b} (decoding and context kinds)"] = [p for p in made if p is not None]
    return figs


OUTCOMES_SECTION = "{} (outcomes)"  # the stacked outcome shares of a benchmark, shown in its own section
REWARD_SECTION = "grpo reward beside held-out accuracy"  # a training signal, drawn against what it stands for
WEIGHTS_SECTION = "weight change per module"  # figures of the model, not of a benchmark (eval.probes weights)
