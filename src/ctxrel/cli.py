"""Command line: each verb parses flags into a config and calls one public function.

Heavy libraries (torch, transformers) are imported inside the verbs so `ctxrel --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ctxrel.core.errors import CtxrelError


def _eval_parser(sub) -> None:
    from ctxrel.config.settings import RunConfig
    from ctxrel.config.flags import add_common, add_flags

    p = sub.add_parser("eval", help="score a model on knowledge-conflict benchmarks",
                       description="Score a model on knowledge-conflict benchmarks; results go to --out "
                                   "(rerunning the same command resumes).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. eval.limit=20")
    add_common(p)
    p.add_argument("--run", metavar="DIR", help="score every saved checkpoint of a study run directory (on its "
                                                "benchmarks, or --benchmark), with its resolved config; resumable")
    add_flags(p, RunConfig)


def cmd_eval(args) -> int:
    from ctxrel.evaluate import shards
    from ctxrel.evaluate.run import run_eval
    from ctxrel.config.flags import from_args

    if args.run is not None:  # --run '' is an error below, not a plain eval
        return _eval_run(args)
    cfg = from_args(args)
    if cfg.series.revisions or cfg.series.checkpoints:  # a checkpoint series into one trajectory (ctxrel.evaluate.series)
        return _eval_series(cfg)
    shard = shards.current()  # under accelerate launch: every process scores a shard (ctxrel.evaluate.shards)
    if shard.world > 1:
        shard = shards.join(cpu=shards.device_of(shard, cfg.model.device) == "cpu")
    results = run_eval(cfg, shard=shard)
    if not shard.main:  # one process reports
        return 0
    print(format_table(results))
    _print_harm(cfg.out)
    print(f"\nresults: {cfg.out}/metrics.csv (pandas.read_csv), per-item records: {cfg.out}/evals/")
    return 0


def _eval_run(args) -> int:
    from ctxrel.config.flags import given
    from ctxrel.report import format_trajectory
    from ctxrel.rundir.files import RunDir
    from ctxrel.evaluate.saved_run import score_run
    from ctxrel.evaluate.shards import is_main_process

    if not args.run.strip():
        raise CtxrelError("--run needs a study run directory (got an empty path)")
    flags = given(args)
    clash = (["--config"] if args.config is not None else []) + [
        flag for key, flag in (("model.name", "--model"), ("model.adapter", "--adapter"), ("out", "--out"),
                               ("series.revisions", "--revisions"), ("series.checkpoints", "--checkpoints"))
        if key in flags]
    if clash:
        raise CtxrelError(f"--run scores a study's own checkpoints; {', '.join(clash)} cannot be combined with it "
                          "(use KEY=VALUE overrides of the study config, e.g. eval.limit=50)")
    settings = {k: v for k, v in flags.items() if k != "eval.benchmarks" and k.startswith(("eval.", "model."))}
    score_run(args.run, benchmarks=flags.get("eval.benchmarks"), overrides=list(args.overrides), settings=settings)
    if not is_main_process():  # under accelerate launch, one process reports
        return 0
    print(format_trajectory(RunDir(args.run).metrics()))
    _print_harm(args.run)
    print(f"\nresults: {args.run}/metrics.csv")
    return 0


def _eval_series(cfg) -> int:
    from ctxrel.report import format_trajectory
    from ctxrel.rundir.files import RunDir
    from ctxrel.evaluate.series import SERIES_FILE, score_series

    done = score_series(cfg)
    rows = RunDir(cfg.out).metrics()
    print(format_trajectory(rows))
    if any(r["subset"] == "known" for r in rows):
        print(format_trajectory(rows, "known"))
    _print_harm(cfg.out)
    print(f"\n{len(done)} checkpoints, weights fingerprinted: {cfg.out}/{SERIES_FILE}")
    for line in _verdict_lines(cfg.out):
        print(line)
    print(f"next: ctxrel report {cfg.out}")
    return 0


def _study_parser(sub, verb: str) -> None:
    from ctxrel.config.settings import StudyConfig
    from ctxrel.config.flags import add_common, add_flags

    what = ("train a model and score every checkpoint, then plot the trajectory" if verb == "study" else
            "train a model, scoring every checkpoint (the study without the plot; runs under accelerate launch)")
    p = sub.add_parser(verb, help=what, description=what[0].upper() + what[1:] + ". Rerunning the same command "
                       "resumes from the latest checkpoint.")
    p.add_argument("args", nargs="*", metavar="CONFIG KEY=VALUE",
                   help="YAML config file, a shipped preset (quickstart, paper/llama2-7b-alpaca-lora, ...: "
                        "`ctxrel presets`) or a study run directory, then config overrides, e.g. train.lr=1e-5 "
                        "eval.every=50 out=runs/mine")
    add_common(p, config_help="the config, as a flag (same as the first argument)")
    add_flags(p, StudyConfig, aliases=False)


def cmd_study(args) -> int:
    from ctxrel.config.flags import from_args, split
    from ctxrel.report import format_trajectory
    from ctxrel.rundir.files import RunDir
    from ctxrel.evaluate.shards import is_main_process
    from ctxrel.train.study import run_study

    source = args.config or next(iter(split(args.args)[0]), None)
    if source is None:
        raise CtxrelError(f"ctxrel {args.verb} needs a config: a shipped preset (quickstart; `ctxrel presets`), a "
                          "YAML file or a run directory")
    cfg = from_args(args)
    summary = run_study(cfg, plot=args.verb == "study")
    if not is_main_process():  # under accelerate launch, one process reports
        return 0
    rows = RunDir(cfg.out).metrics()
    print(format_trajectory(rows))
    if any(r["subset"] == "known" for r in rows):
        print(format_trajectory(rows, "known"))
    _print_harm(cfg.out)
    print("cf-acc / par-acc = share of outputs containing the context / parametric answer (both can hold), "
          "[95% bootstrap CI];\nknown = items the base model (step 0) answers with the parametric answer when "
          "asked without context")
    t, e, w = summary["train_s"], summary["eval_s"], summary["wall_s"]
    print(f"\ntime: {w:.0f} s wall (this command); training {t:.0f} s, evaluation {e:.0f} s over the whole run "
          f"(evaluation / training = {e / max(t, 1e-9):.2f})")
    where = f"plot: {summary['plot']}, " if "plot" in summary else ""
    print(f"{where}metrics: {cfg.out}/metrics.csv, per-item records: {cfg.out}/evals/, "
          f"checkpoints: {cfg.out}/checkpoints/")
    for line in _verdict_lines(cfg.out):
        print(line)
    print(f"next: ctxrel report {cfg.out}   (inversion verdict with CIs, per-category curves, item flips; HTML)")
    name = str(source).removesuffix(".yaml")
    if name.endswith("quickstart"):
        print("the inversion on a real model: `ctxrel study inversion-demo` (= make demo, 17 min on a busy 2-core machine): "
              "contexts that name the memorised capital revert to memory in 3 of 3 seeds (cf-acc .58 -> .19 from "
              "step 8 to 128); docs/forms.md")
    elif name.endswith("inversion-demo"):
        print("why this form: in the pre-registered form ablation (docs/forms.md) it reverted in 3 of 3 seeds "
              "(pooled fall +.39 [+.28, +.50]); without the memorised capital in the context, 0 of 3. On ctxrel's "
              "cf_capitals_moved the same recipe inverts in 2 of 10 seeds, and trained 512 steps (`ctxrel study "
              "inversion-long`, ~50 min a seed) returns to memory there in 3 of 3 (docs/results/real-model.md)")
    return 0


def _verdict_lines(out: str) -> list[str]:
    """The inversion verdict of a finished study, one line per conflict benchmark and subset (as `ctxrel report`
    gives it, without the plots)."""
    from ctxrel.analysis.rundata import load_run
    from ctxrel.analysis.summary import summarise

    lines = []
    for bench, b in summarise([load_run(out)], "study", n_boot=1000)["benchmarks"].items():
        for subset, st in b["subsets"].items():
            if st.get("peak"):
                drop = st["drop"][0]
                lines.append(f"verdict {bench} [{subset}, {st['n_items']} items]: {st['verdict_text']} (peak "
                             f"{st['peak']['value']:.3f} @ {st['peak']['step']}, final {st['final']['value']:.3f}; "
                             f"drop {drop['estimate']:+.3f} [{drop['ci_low']:+.3f}, {drop['ci_high']:+.3f}])")
    return lines


def _print_harm(out) -> None:
    """The do-no-harm table (eval.contexts / eval.decoding), when variants were scored."""
    from ctxrel.rundir.files import RunDir
    from ctxrel.evaluate.variants import format_harm

    text = format_harm(RunDir(out).metrics())
    if text:
        print("\n" + text)


def _ci(row) -> str:
    if row["ci_low"] != row["ci_low"]:  # NaN: no items
        return f"{'-':>17}"
    return f"{row['value']:.3f} [{row['ci_low']:.2f},{row['ci_high']:.2f}]"


def format_table(results) -> str:
    lines = []
    for r in results:
        c = r.counts
        first = next(iter(r.metrics.values()))
        if "n_loaded" not in c:  # a standard task, or id_accuracy
            cells = "  ".join(f"{m['metric']} {_ci(m)}" for m in first)
            what = "tasks" if r.benchmark == "id_accuracy" else "items"
            lines.append(f"\n{r.benchmark}: {c['n_items']} {what}  {cells}")
            continue
        known = f"{c['n_known']} known without context" if c["n_known"] >= 0 else "no knowledge filter"
        lines.append(f"\n{r.benchmark}: {c['n_loaded']} rows, {c['n_invalid']} invalid skipped, "
                     f"{c['n_too_long']} too long skipped, {c['n_items']} evaluated, {known}")
        if c.get("n_from_earlier_runs"):
            lines.append(f"  ({c['n_from_earlier_runs']} of the {c['n_items']} items come from an earlier run into "
                         "this directory with a larger --limit: the metrics cover every item it holds)")
        for source, why in r.skipped[:5]:
            why = why.split(f"{source}: ", 1)[-1].split("; fix the row")[0]  # the location is shown once
            lines.append(f"  skipped {source}: {why}")
        if len(r.skipped) > 5:
            lines.append(f"  ... and {len(r.skipped) - 5} more skipped rows")
        names = [m["metric"] for m in first]
        if "cf_acc" in names:
            lines.append(f"  {'subset':<7}{'n':>5}  {'cf-acc [95% CI]':>19}  {'par-acc [95% CI]':>19}  "
                         f"{'context':>7} {'param':>6} {'both':>6} {'neither':>7}")
            for subset, ms in r.metrics.items():
                m = {x["metric"]: x for x in ms}
                if not m["cf_acc"]["n"]:
                    lines.append(f"  {subset:<7}{0:>5}  (no items)")
                    continue
                lines.append(f"  {subset:<7}{m['cf_acc']['n']:>5}  {_ci(m['cf_acc']):>19}  "
                             f"{_ci(m['par_acc']):>19}  {m['share_context']['value']:>7.3f} "
                             f"{m['share_parametric']['value']:>6.3f} {m['share_both']['value']:>6.3f} "
                             f"{m['share_neither']['value']:>7.3f}")
        else:
            lines.append(f"  {'subset':<7}{'n':>5}  {'M_C [95% CI]':>19}  {'p_c > p_p [95% CI]':>19}")
            for subset, ms in r.metrics.items():
                m = {x["metric"]: x for x in ms}
                lines.append(f"  {subset:<7}{m['m_c']['n']:>5}  {_ci(m['m_c']):>19}  {_ci(m['ll_context']):>19}")
    if any("known" in r.metrics for r in results):
        lines.append("\nknown = items whose question the reference model answers with the parametric answer when "
                     "asked without context;\ncf-acc / par-acc = share of outputs containing the context / "
                     "parametric answer (both can hold); [95% bootstrap CI]")
    return "\n".join(lines).lstrip("\n")


def cmd_benchmarks(args) -> int:
    from ctxrel.benchmarks.registry import describe

    rows = describe()
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{w}}  v{r['version']}  {r['description']}\n{'':<{w}}       data: {r['data']}")
    return 0


def _theory_parser(sub, full: bool) -> None:
    from ctxrel.config.flags import add_common

    t = sub.add_parser("theory", help="simulate the study's one-layer attention theory (seconds, CPU)",
                       description="Simulate a theory preset (configs/theory: prop1, prop2, prop3, theorem1, "
                                   "mitigation) or your own config, and check its sign prediction.")
    t.add_argument("--preset", metavar="NAME", help="a shipped theory preset: prop1, prop2, prop3, theorem1, "
                                                    "mitigation (same as --config NAME)")
    add_common(t)
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="model/training knobs, e.g. lr=10 seed=1")
    if full:  # the simulator's config imports torch: only for `ctxrel theory ...` itself
        from ctxrel.config.flags import add_flags
        from ctxrel.theory.driver import TheoryRunConfig

        add_flags(t, TheoryRunConfig)


def cmd_theory(args) -> int:
    from ctxrel.config.flags import from_args
    from ctxrel.theory.driver import run_theory

    source = args.preset or args.config
    if source is None:
        raise CtxrelError("ctxrel theory needs --preset NAME (prop1, prop2, prop3, theorem1, mitigation) or "
                          "--config FILE")
    cfg = from_args(args)
    name = Path(str(source)).stem
    out = cfg.out or f"runs/theory-{name}"
    r = run_theory(cfg, out, name=name)
    print(r["claim"])
    for k, v in r["check"].items():
        print(f"  {k}: {v}")
    print(f"{'PASS' if r['check']['passed'] else 'FAIL'}  run dir: {out}  plot: {r['plot']}")
    return 0 if r["check"]["passed"] else 1


def cmd_presets(args) -> int:
    from ctxrel.config import shipped as P
    from ctxrel.config.flags import resolved_yaml

    if args.action == "show":
        if not args.name:
            raise CtxrelError("ctxrel presets show needs a NAME (`ctxrel presets` lists them)")
        print(resolved_yaml(args.name))
        return 0
    by_verb: dict[str, list[str]] = {}
    for name in P.names():
        by_verb.setdefault(P.verb_of(name), []).append(name)
    for verb in ("study", "synth", "theory", "eval", "curate", "report"):
        found = by_verb.get(verb, [])
        how = {"study": "ctxrel study NAME", "curate": "ctxrel curate OPERATION --config FILE"}.get(
            verb, f"ctxrel {verb} --config NAME")
        print(f"{verb} ({how}){':' if found else ': none shipped (any --config FILE works)'}")
        width = max((len(n) for n in found), default=0)
        for name in found:
            text = P.summary(P.PRESETS_DIR / (name + ".yaml"))
            print(f"  {name:<{width}}  {text if len(text) <= 100 else text[:97] + '...'}")
    print("\nctxrel presets show NAME > my.yaml   prints one resolved (every key); edit it, then "
          "ctxrel <verb> --config my.yaml key=value")
    return 0


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The CLI. `verb` = the verb being run: verbs whose config module imports torch (theory, synth) add their
    derived flags only then, so `ctxrel --help` and the other verbs stay instant."""
    from ctxrel import __version__

    parser = argparse.ArgumentParser(prog="ctxrel", description="Measure how a language model weighs its "
                                     "context against what it memorised. Every verb takes --config FILE (or a "
                                     "preset) and KEY=VALUE overrides: `ctxrel presets`.")
    parser.add_argument("--version", action="version", version=f"ctxrel {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _eval_parser(sub)
    b = sub.add_parser("benchmarks", help="list registered benchmarks")
    b.add_argument("action", choices=["list"], nargs="?", default="list")
    _study_parser(sub, "study")
    _study_parser(sub, "train")
    _theory_parser(sub, full=verb == "theory")
    pr = sub.add_parser("presets", help="list the shipped presets of every verb, or print one resolved",
                        description="List the shipped presets (ctxrel/configs) of every verb, or print one "
                                    "resolved: `ctxrel presets show quickstart > my.yaml` starts your own config.")
    pr.add_argument("action", choices=["list", "show"], nargs="?", default="list")
    pr.add_argument("name", nargs="?", metavar="NAME", help="show: a preset's full name (quickstart, synth/quick, "
                                                            "theory/prop1, paper/llama2-7b-alpaca-lora)")
    for module in _VERB_MODULES:
        importlib.import_module(module).add_parsers(sub, verb)
    return parser


# Verbs that live with their part: each module's add_parsers(sub) adds its verb(s) and sets `handler` on them
# with set_defaults(handler=fn); fn(args) -> exit code; `verb` is the verb being run (None for `ctxrel --help`).
# The modules must import only the standard library at the top.
_VERB_MODULES = ("ctxrel.curate.cli", "ctxrel.report.cli", "ctxrel.synth.cli", "ctxrel.exports.cli")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; KEY=VALUE (and a report's RUN) may come after flags too (`ctxrel report a --smooth 3
    b smooth=5`): argparse takes one run of positionals, the later ones join it here."""
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        name = "args" if hasattr(args, "args") else "overrides"
        if not hasattr(args, name):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, name, list(getattr(args, name) or []) + extra)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.verb is None:
        build_parser().print_help()
        return 0
    handlers = {"eval": cmd_eval, "benchmarks": cmd_benchmarks, "theory": cmd_theory, "study": cmd_study,
                "train": cmd_study, "presets": cmd_presets}
    handler = getattr(args, "handler", None) or handlers[args.verb]
    from ctxrel.rundir import interruption
    from ctxrel.rundir.files import disk_full
    from ctxrel.rundir.marker import release_all

    interruption.install()  # SIGTERM: a clean stop (a checkpoint being written completes first)
    refused = False
    try:
        return handler(args)
    except CtxrelError as e:
        refused = True  # a run directory this command created and left without results is removed
        print(f"ctxrel: error: {e}", file=sys.stderr)
        return 2
    except interruption.Terminated:
        import shlex

        print("ctxrel: stopped by SIGTERM; every finished checkpoint, record and metric row is saved (nothing "
              f"half-written). Resume with the same command: ctxrel {shlex.join(argv)}", file=sys.stderr)
        return 143
    except Exception as e:
        message = disk_full(e)
        if message is None:
            raise
        print(f"ctxrel: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctxrel: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        release_all(refused=refused)  # this verb's run directory locks (the OS drops them anyway at exit)


if __name__ == "__main__":
    sys.exit(main())
