"""`ctxrel synth`: the verb. Standard library only at the top (torch loads inside the handler)."""

from __future__ import annotations

import time


def add_parsers(sub, verb: str | None = None) -> None:
    p = sub.add_parser(
        "synth", help="synthetic lab: pretrain a tiny transformer on a generated world, finetune, score (CPU)",
        description="Pretrain a tiny transformer from scratch on a synthetic world of facts, instruction-finetune "
                    "it on a C / C+S / S mixture and score every checkpoint on held-out knowledge conflicts. "
                    "Writes a ctxrel run directory (rerunning the same command resumes).")
    p.add_argument("--preset", help="preset under ctxrel/configs/synth (see --list; same as --config NAME); "
                                    "default: built-in defaults")
    p.add_argument("--config", metavar="FILE", help="YAML config file (`ctxrel presets show synth/quick > my.yaml` "
                                                    "starts one), or a preset name")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--seeds", help="several seeds, e.g. 0,1,2: one run directory each, under --out/seed-N")
    p.add_argument("--out", help="run directory (default runs/synth-PRESET)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. finetune.steps=300 finetune.drop_cs=true")
    if verb == "synth":  # SynthConfig's module imports torch: its flags (--seed, --threads, ...) only when run
        from ctxrel.config.flags import add_flags
        from ctxrel.synth.lab import SynthConfig

        add_flags(p, SynthConfig)
    p.set_defaults(handler=cmd_synth)


def _seeds(args) -> list[int] | None:
    from ctxrel.core.errors import CtxrelError

    if args.seeds is None:
        return None
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CtxrelError(f"--seeds {args.seeds!r}: expected integers separated by commas, e.g. 0,1,2") from None


def cmd_synth(args) -> int:
    from pathlib import Path

    from ctxrel.core.errors import CtxrelError
    from ctxrel.synth.lab_presets import preset_names, preset_summary

    if args.list:
        for name in preset_names():
            print(f"{name:<24} {preset_summary(name)}")
        return 0
    from ctxrel.config.flags import from_args, given

    seeds = _seeds(args)
    if seeds is not None and "seed" in given(args):
        raise CtxrelError("give --seed or --seeds, not both")
    source = args.preset or args.config
    cfg = from_args(args)  # fail fast on a bad preset or key, before anything is built
    name = Path(source).stem if source else "default"
    out = Path(args.out or f"runs/synth-{name}")

    from ctxrel.synth.study import run_synth
    import dataclasses

    t0 = time.perf_counter()
    runs = [(s, out / f"seed-{s}") for s in seeds] if seeds is not None else \
        [(cfg.seed, out)]
    summaries = []
    for seed, path in runs:
        c = dataclasses.replace(cfg, seed=seed)
        print(f"== synth {name} seed {seed} -> {path}", flush=True)
        s = run_synth(c, path, preset=args.preset or args.config, log=lambda m: print(f"  {m}", flush=True))
        summaries.append(s)
        _print_run(path)
        print(f"  {s['seconds']:.1f} s (pretrain {s['pretrain'].get('seconds', 0):.1f} s when trained here, "
              f"finetune {s['train_seconds']:.1f} s, eval {s['eval_seconds']:.1f} s); plot: {s['plot']}\n")
    if len(summaries) > 1:
        print("seed  peak cf-acc (step)  final   drop")
        for s in summaries:
            print(f"{s['seed']:>4}  {s['peak']:.3f} ({s['peak_step']:>5})    {s['final']:.3f}  {s['drop']:+.3f}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _print_run(path) -> None:
    from ctxrel.report import format_trajectory
    from ctxrel.rundir.files import RunDir

    rows = [r for r in RunDir(path).metrics() if r["benchmark"] in ("synth_conflict", "id_accuracy")]
    print(format_trajectory(rows))
