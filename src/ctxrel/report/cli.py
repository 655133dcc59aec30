"""Verbs `ctxrel report` and `ctxrel flips`. Standard library only at the top: `ctxrel --help` stays instant;
numpy, scipy and matplotlib are imported inside the handlers. `ctxrel report`'s flags are derived from
ReportConfig like every verb's."""

from __future__ import annotations

import argparse
import math

from dataclasses import dataclass

from ctxrel.config.flags import add_common, add_flags, option
from ctxrel.report.scrutiny_text import scrutiny_lines

CHECKPOINT_HELP = "start, peak, trough, final, a step number (48) or a checkpoint name (step-000048)"


@dataclass
class ReportConfig:
    runs: list[str] = option(factory=list, required="RUN")  # run directories (ctxrel study / eval --run)
    # comma-separated, one per run (None = directory names); repeat a label to group runs as seeds, e.g.
    # base,base,qk
    labels: str | None = option(None, flag="--labels")
    seeds: bool = False  # all runs are seeds of one study
    # report directory (None = RUN/report/ for one study, FIRST_RUN/report/compare-LABEL-LABEL/ for a comparison)
    out: str | None = None
    smooth: int = 0  # statistics on a centred moving average over N checkpoints (labelled; 0 = off)
    # item flips from this checkpoint: start, peak, trough, final, a step number (48), a name (step-000048), or
    # in a multi-stage study a stage's name (its last checkpoint: --from sft --to 40)
    flips_from: str = option("peak", flag="--from")
    flips_to: str = option("final", flag="--to")  # item flips to this checkpoint
    bootstrap: int = 2000  # bootstrap resamples
    # plan for a drop D (0 < D < 1): the items and seeds that detect it (80% power, two-sided .05), from the
    # variance of the runs given
    plan: float | None = None


def add_parsers(sub, verb: str | None = None) -> None:
    p = sub.add_parser(
        "report", help="statistics, verdict, plots and item flips of studies, as one HTML page",
        description="Find the context-parametric inversion in one study, or compare studies: trajectory "
                    "statistics with paired bootstrap CIs, an inversion verdict, plots, item flips (exact "
                    "McNemar). Writes index.html (self-contained), summary.json and PNGs to --out.",
        epilog="Runs sharing a label are seeds of one study. Default --out: RUN/report/ for one study, "
               "FIRST_RUN/report/compare-LABEL-LABEL/ for a comparison.")
    p.add_argument("args", nargs="*", metavar="RUN", help="run directories (ctxrel study / eval --run), and "
                                                          "KEY=VALUE overrides, e.g. smooth=3")
    add_common(p)
    add_flags(p, ReportConfig)
    p.set_defaults(handler=cmd_report)

    f = sub.add_parser("flips", help="items that switched between context and parametric answers, exact McNemar",
                       description="Between two checkpoints of a study: which items moved context -> parametric "
                                   "and back, per category, with an exact McNemar test on the context answer.")
    f.add_argument("run", metavar="RUN", help="run directory")
    f.add_argument("--from", dest="frm", default="peak", metavar="CKPT", help=f"{CHECKPOINT_HELP} (default peak)")
    f.add_argument("--to", default="final", metavar="CKPT", help=f"{CHECKPOINT_HELP} (default final)")
    f.add_argument("--benchmark", help="conflict benchmark (default: every one in the run)")
    f.add_argument("--subset", choices=["all", "known"], default="all",
                   help="known = items the base model knows without context (default all)")
    f.add_argument("--smooth", type=int, default=0, metavar="N", help="locate peak on an N-checkpoint moving average")
    f.add_argument("--show", type=int, default=10, metavar="K", help="flipped items listed per direction (default 10)")
    f.set_defaults(handler=cmd_flips)


def _ci(diffs: list[dict]) -> str:
    out = []
    for d in diffs:
        lo, hi = d["ci_low"], d["ci_high"]
        if d["basis"] != "none" and not (lo is None or math.isnan(lo)):
            out.append(f"[{lo:+.3f}, {hi:+.3f}] {d['basis']}")
    return f"{diffs[0]['estimate']:+.3f} " + "; ".join(out) if diffs else "-"


def _id_at(id_accuracy: list[dict], step: int) -> str:
    """ID accuracy at a checkpoint step, or '-' when the run has none there."""
    by_step = {d["step"]: d["value"] for d in id_accuracy or []}
    return f"{by_step[step]:.3f}" if step in by_step else "-"


def _memory_return(mr: dict) -> str:
    """One line: par-acc from its trough to the end (the memorised answer coming back), with its intervals."""
    tr, fn = mr["trough"], mr["final"]
    said = "significant" if mr["significant"] else "not significant"
    return (f"memory return: par-acc {tr['value']:.3f} @ {tr['step']} (trough) -> {fn['value']:.3f} @ {fn['step']}, "
            f"{_ci(mr['change'])} ({said})")


def format_stats(label: str, bench: str, subset: str, st: dict, id_accuracy: list[dict] | None = None) -> str:
    if not st.get("peak"):
        return f"{label} {bench} [{subset}]: {st['verdict_text']}"
    pk, fn, s0 = st["peak"], st["final"], st["start"]
    seeds = f", {st['n_seeds']} seeds" if st.get("n_seeds", 1) > 1 else ""
    lines = [f"{label}  {bench} [{subset}, {st['n_items']} items{seeds}]: start {s0['value']:.3f} @ {s0['step']}, "
             f"peak {pk['value']:.3f} @ {pk['step']}, final {fn['value']:.3f} @ {fn['step']}",
             f"    rise {_ci(st['rise'])}   drop {_ci(st['drop'])}"]
    if id_accuracy:
        lines.append(f"    ID accuracy: start {_id_at(id_accuracy, s0['step'])}, at peak "
                     f"{_id_at(id_accuracy, pk['step'])}, final {_id_at(id_accuracy, fn['step'])}")
    if st.get("memory_return"):
        lines.append("    " + _memory_return(st["memory_return"]))
    for one in st.get("per_seed", []):
        if one.get("peak"):
            back = f"; par-acc back {_ci(one['memory_return']['change'])}" if one.get("memory_return") else ""
            lines.append(f"    seed {one['run']}: peak {one['peak']['value']:.3f} @ {one['peak']['step']}, final "
                         f"{one['final']['value']:.3f}; rise {_ci(one['rise'])}; drop {_ci(one['drop'])}; "
                         f"{one['verdict']}{back}")
    lines.append(f"    verdict{' across the run' if st.get('stages') else ''}: {st['verdict_text']}")
    for one in st.get("stages", []):  # a multi-stage study: each stage on its own
        where = (f"steps {one['offset']}-{one['offset'] + one['total']}: start {one['start']['value']:.3f}, "
                 f"peak {one['peak']['value']:.3f} @ {one['peak']['step']}, final {one['final']['value']:.3f}; "
                 f"rise {_ci(one['rise'])}; drop {_ci(one['drop'])}; ") if one.get("peak") else ""
        lines.append(f"    stage {one['name']} ({one['kind']}, {where}verdict: {one['verdict_text']})"
                     if not where else f"    stage {one['name']} ({one['kind']}) {where}{one['verdict_text']}")
    lines += ["    " + line for line in scrutiny_lines(st)]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from ctxrel.config.flags import from_args
    from ctxrel.report.build import build_report
    from ctxrel.report.html import left_out_text

    cfg = from_args(args)
    labels = [x.strip() for x in cfg.labels.split(",")] if cfg.labels else None
    res = build_report(cfg.runs, labels=labels, out=cfg.out, seeds=cfg.seeds, smooth=cfg.smooth,
                       n_boot=cfg.bootstrap, flips_from=cfg.flips_from, flips_to=cfg.flips_to, plan=cfg.plan)
    for line in res.get("live", []):
        print(line)
    for g in res["groups"]:
        for bench, b in g["benchmarks"].items():
            if b.get("steps_left_out"):
                print(left_out_text(g["label"], b))
            for subset, st in b["subsets"].items():
                print(format_stats(g["label"], bench, subset, st, g.get("id_accuracy")))
            for line in format_probes(b.get("probes", {})):
                print("    " + line)
            for fl in b.get("flips", []):
                t = fl["by_category"]["all"]
                print(f"    flips {fl['run']} {fl['from']['checkpoint']} -> {fl['to']['checkpoint']}: "
                      f"{t['lost']} lost / {t['gained']} gained the context answer of {t['n']} "
                      f"(exact McNemar p = {t['p_value']:.3g})")
    for g in res["groups"]:
        if g.get("weights"):
            share = ", ".join(f"{p['step']}: {p['value']:.3f}" for p in g["weights"]["qk_share"]
                              if p["value"] is not None and not math.isnan(p["value"]))
            print(f"{g['label']}  weights: q/k share of the squared change by step: {share or '-'}")
        if g.get("reward"):
            print(reward_line(g))
    print(f"\nreport: {res['index']}\nsummary: {res['summary']}\nfigures: {len(sum(res['figures'].values(), []))} "
          f"PNGs in {res['out']}")
    return 0


def _value_at(pts: list[dict], step: int) -> str:
    """The value of the last point at or before `step` ('-' when none)."""
    before = [p for p in pts if p["step"] <= step and p.get("value") is not None]
    return f"{before[-1]['value']:.3f} (step {before[-1]['step']})" if before else "-"


def reward_line(g: dict) -> str:
    """The grpo reward over its logged steps (the mean, and the first half's against the second's: one noisy batch
    at either end says little), next to the held-out accuracies over the same steps: the report's guard against a
    reward that is gamed rather than learned."""
    from ctxrel.report.plots import held_out_lines

    rows = g["reward"]
    first, last, half = rows[0], rows[-1], max(1, len(rows) // 2)
    mean = lambda part: sum(r["reward"] for r in part) / len(part)  # noqa: E731
    extra = "".join(f", {k} {last[k]:.3f}" for k in ("zero_variance_share", "kl") if last.get(k) is not None)
    held = "; ".join(f"{label} {_value_at(pts, first['step'] - 1)} -> {_value_at(pts, last['step'])}"
                     for label, pts in held_out_lines(g).items())
    halves = f" (first half {mean(rows[:half]):.3f}, second half {mean(rows[half:]):.3f})" if len(rows) > 1 else ""
    return (f"{g['label']}  grpo reward (training batches, not a verdict): mean {mean(rows):.3f} over steps "
            f"{first['step']}-{last['step']}{halves}; at the last step{extra or ' -'}\n    held out over the same "
            f"steps: {held or 'no conflict benchmark scored'}")


def format_probes(probes: dict) -> list[str]:
    """The probe lines of `ctxrel report`: lens crossing per step, heads that moved most."""
    lines = []
    lens = probes.get("lens")
    if lens:
        lines.append("lens: mean log-odds crosses 0 at layer " + ", ".join(
            f"{c['step']}: {'-' if c['cross_layer'] is None else format(c['cross_layer'], '.1f')}"
            for c in lens["curves"]) + " (by step)")
    heads = probes.get("heads")
    if heads:
        top = [c for c in heads["changes"] if c["significant"]][:4]
        lines.append(f"heads: context attention, step {heads['from_step']} -> {heads['to_step']}, largest "
                     "significant changes: " + ("; ".join(
                         f"L{c['layer']}H{c['head']} {c['before']:.3f} -> {c['after']:.3f}" for c in top) or "none"))
    return lines


def cmd_flips(args: argparse.Namespace) -> int:
    from ctxrel.analysis.inversion import anchors
    from ctxrel.analysis.rundata import live_text, load_run, trajectory_points
    from ctxrel.analysis.summary import run_flips
    from ctxrel.core.errors import CtxrelError

    run = load_run(args.run)
    if live_text(run):
        print(live_text(run))
    benches = run.benchmarks()
    if args.benchmark:
        if args.benchmark not in benches:
            raise CtxrelError(f"{args.run}: no records of benchmark {args.benchmark!r} at checkpoints with a step; "
                              f"it has: {', '.join(benches) or 'none'}")
        benches = [args.benchmark]
    for bench in benches:
        if run.mode(bench) != "generate":
            print(f"{bench}: likelihood mode, no generations to flip (skipped)")
            continue
        pts = trajectory_points([run], bench, "cf_acc", args.subset)
        try:
            fl = run_flips(run, bench, anchors(pts, args.smooth), args.frm, args.to, args.subset)
        except ValueError as e:
            raise CtxrelError(f"{args.run}: {e}") from None
        print(format_flips(bench, fl, args.show))
    return 0


def format_flips(bench: str, fl: dict, show: int = 10) -> str:
    a, b = fl["from"], fl["to"]
    lines = [f"{bench} [{fl['subset']}]: {a['checkpoint']} ({a['spec']}) -> {b['checkpoint']} ({b['spec']})",
             f"  {'category':<22}{'items':>6}{'cf before':>10}{'cf after':>9}{'lost':>6}{'gained':>7}"
             f"{'ctx->par':>9}{'par->ctx':>9}  McNemar p"]
    for cat, t in fl["by_category"].items():
        cf_a = "-" if t["cf_a"] is None or math.isnan(t["cf_a"]) else f"{t['cf_a']:.3f}"
        cf_b = "-" if t["cf_b"] is None or math.isnan(t["cf_b"]) else f"{t['cf_b']:.3f}"
        lines.append(f"  {cat or '(none)':<22}{t['n']:>6}{cf_a:>10}{cf_b:>9}{t['lost']:>6}{t['gained']:>7}"
                     f"{len(t['to_parametric']):>9}{len(t['to_context']):>9}  {t['p_value']:.3g}")
    for kind, title in (("to_parametric", "context -> parametric"), ("to_context", "parametric -> context")):
        items = fl["items"][kind]
        if items and show > 0:
            lines.append(f"  {title} ({len(items)}):")
            for it in items[:show]:
                lines.append(f"    {it['id']}: {it['question']!r} ctx {it['context_answer']!r} par "
                             f"{it['parametric_answer']!r}: {it['output_from']!r} -> {it['output_to']!r}")
            if len(items) > show:
                lines.append(f"    ... {len(items) - show} more (--show K)")
    lines.append("  lost/gained = items whose output contains the context answer before only / after only "
                 "(McNemar's discordant pairs; exact two-sided binomial test)")
    return "\n".join(lines)
