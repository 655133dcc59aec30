"""Command line: each verb parses flags into a config and calls one public function.

Heavy libraries (torch, transformers) are imported inside the verbs so `ctxrel --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ctxrel.errors import CtxrelError


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model on knowledge-conflict benchmarks",
                       description="Score a model on knowledge-conflict benchmarks; results go to --out "
                                   "(rerunning the same command resumes).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. eval.limit=20")
    p.add_argument("--config", help="YAML config file (flags and KEY=VALUE override it)")
    p.add_argument("--model", help="hub id, local directory, .gguf file, smollm2-135m-instruct (default) or "
                                   "gemma3-270m (base Gemma 3, extra `gemma`)")
    p.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")
    p.add_argument("--reference-model", help="model asked without context by the knowledge filter "
                                             "(default: the evaluated model)")
    p.add_argument("--benchmark", action="append", help="NAME, NAME=PATH or PATH; repeatable "
                                                        "(default: cf_capitals); standard tasks: gsm8k, mmlu, "
                                                        "arc_challenge, squad")
    p.add_argument("--template", choices=["auto", "alpaca", "tulu", "chat", "plain"])
    p.add_argument("--prompt", metavar="FORMAT", help="prompt body with {context} and {question}")
    p.add_argument("--instruct", action="store_true", default=None,
                   help="tell the model to answer from the background")
    p.add_argument("--limit", type=int, help="items per benchmark (seeded, stratified by category)")
    p.add_argument("--samples", type=int, help="generations per item (default 1)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0 = greedy)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--mode", choices=["generate", "likelihood"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-knowledge-filter", action="store_true", default=None)
    p.add_argument("--attention", action="store_true", default=None,
                   help="also record the mean attention from the answer position to the context's and the "
                        "question's tokens (over layers and heads; the study's Fig. 3b)")
    p.add_argument("--skip-invalid", action="store_true", default=None,
                   help="skip and count invalid rows / over-long prompts instead of stopping")
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument("--shots", type=int, help="few-shot examples for standard tasks (default: lm-eval's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/eval)")
    p.add_argument("--run", metavar="DIR", help="score every saved checkpoint of a study run directory (on its "
                                                "benchmarks, or --benchmark); resumable")


_FLAG_KEYS = {"model": "model.name", "adapter": "model.adapter", "reference_model": "model.reference",
              "batch_size": "model.batch_size", "device": "model.device",
              "trust_remote_code": "model.trust_remote_code", "benchmark": "eval.benchmarks",
              "template": "eval.template", "prompt": "eval.prompt", "instruct": "eval.instruct",
              "limit": "eval.limit", "samples": "eval.samples", "temperature": "eval.temperature",
              "max_new_tokens": "eval.max_new_tokens", "mode": "eval.mode", "skip_invalid": "eval.skip_invalid",
              "seed": "eval.seed", "shots": "eval.shots", "attention": "eval.attention", "out": "out"}


def cmd_eval(args) -> int:
    from ctxrel import config as C
    from ctxrel.evaluate import run_eval

    if args.run:
        return _eval_run(args)
    data = C.to_dict(C.load(args.config, args.overrides))
    for key, value in _flag_settings(args).items():
        C.set_key(data, key, value)
    cfg = C.from_dict(C.RunConfig, data)
    results = run_eval(cfg)
    print(format_table(results))
    _print_harm(cfg.out)
    print(f"\nresults: {cfg.out}/metrics.csv (pandas.read_csv), per-item records: {cfg.out}/evals/")
    return 0


def _flag_settings(args) -> dict:
    """The flags the user gave, as dotted config keys with typed values."""
    settings = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items() if getattr(args, flag) is not None}
    if args.no_knowledge_filter:
        settings["eval.knowledge_filter"] = False
    return settings


def _eval_run(args) -> int:
    from ctxrel.report import format_trajectory
    from ctxrel.results import RunDir
    from ctxrel.train.study import score_run

    clash = [f"--{f.replace('_', '-')}" for f in ("config", "model", "adapter", "out")
             if getattr(args, f) is not None]
    if clash:
        raise CtxrelError(f"--run scores a study's own checkpoints; {', '.join(clash)} cannot be combined with it "
                          "(use KEY=VALUE overrides of the study config, e.g. eval.limit=50)")
    settings = {k: v for k, v in _flag_settings(args).items()
                if k != "eval.benchmarks" and k.startswith(("eval.", "model."))}
    score_run(args.run, benchmarks=args.benchmark, overrides=list(args.overrides), settings=settings)
    print(format_trajectory(RunDir(args.run).metrics()))
    _print_harm(args.run)
    print(f"\nresults: {args.run}/metrics.csv")
    return 0


def _study_parser(sub, verb: str) -> None:
    what = ("train a model and score every checkpoint, then plot the trajectory" if verb == "study" else
            "train a model, scoring every checkpoint (the study without the plot; runs under accelerate launch)")
    p = sub.add_parser(verb, help=what, description=what[0].upper() + what[1:] + ". Rerunning the same command "
                       "resumes from the latest checkpoint.")
    p.add_argument("config", help="YAML config file, or a shipped preset name: quickstart, "
                                  "paper/llama2-7b-alpaca-lora, ...")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-5 "
                                                                     "eval.every=50 out=runs/mine")


def cmd_study(args) -> int:
    from ctxrel.report import format_trajectory
    from ctxrel.results import RunDir
    from ctxrel.train.study import is_main_process, load_study_config, run_study

    cfg = load_study_config(args.config, args.overrides)
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
    if str(args.config).removesuffix(".yaml").endswith("quickstart"):
        print("the inversion on a real model: `ctxrel study inversion-real` (20-30 min on 2 cores; one seed in three "
              "inverts, the others rise then fall less or plateau: README, 'The inversion on a real model')")
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
    from ctxrel.results import RunDir
    from ctxrel.variants import format_harm

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


def cmd_theory(args) -> int:
    from ctxrel.config import parse_value
    from ctxrel.theory import run_theory

    overrides = {}
    for o in args.overrides:
        if "=" not in o:
            raise CtxrelError(f"override {o!r}: expected KEY=VALUE, e.g. lr=10")
        key, value = o.split("=", 1)
        overrides[key.strip()] = parse_value(value, f"override {o!r}")
    out = args.out or f"runs/theory-{args.preset}"
    r = run_theory(args.preset, out, **overrides)
    print(r["claim"])
    for k, v in r["check"].items():
        print(f"  {k}: {v}")
    print(f"{'PASS' if r['check']['passed'] else 'FAIL'}  run dir: {out}  plot: {r['plot']}")
    return 0 if r["check"]["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    from ctxrel import __version__

    parser = argparse.ArgumentParser(prog="ctxrel", description="Measure how a language model weighs its "
                                     "context against what it memorised.")
    parser.add_argument("--version", action="version", version=f"ctxrel {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _eval_parser(sub)
    b = sub.add_parser("benchmarks", help="list registered benchmarks")
    b.add_argument("action", choices=["list"], nargs="?", default="list")
    _study_parser(sub, "study")
    _study_parser(sub, "train")
    t = sub.add_parser("theory", help="simulate the study's one-layer attention theory (seconds, CPU)")
    t.add_argument("--preset", required=True, choices=["prop1", "prop2", "prop3", "theorem1", "mitigation"])
    t.add_argument("--out", help="run directory (default runs/theory-PRESET)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="model/training knobs, e.g. lr=10 seed=1")
    for module in _VERB_MODULES:
        importlib.import_module(module).add_parsers(sub)
    return parser


# Verbs that live with their part: each module's add_parsers(sub) adds its verb(s) and sets `handler` on them
# with set_defaults(handler=fn); fn(args) -> exit code. The modules must import only the standard library at the top.
_VERB_MODULES = ("ctxrel.curate.cli", "ctxrel.report.cli", "ctxrel.synth.cli")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    handlers = {"eval": cmd_eval, "benchmarks": cmd_benchmarks, "theory": cmd_theory, "study": cmd_study,
                "train": cmd_study}
    handler = getattr(args, "handler", None) or handlers[args.verb]
    from ctxrel.run_marker import release_all

    try:
        return handler(args)
    except CtxrelError as e:
        print(f"ctxrel: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctxrel: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        release_all()  # the run directory locks of this verb (the OS drops them anyway when the process ends)


if __name__ == "__main__":
    sys.exit(main())
