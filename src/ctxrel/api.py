"""ctxrel from Python: run directories as pandas tables, the verdict as data, evaluations and studies from config
objects. Every name in `__all__` is also reachable as `ctxrel.NAME` (imported on first use, so `import ctxrel`
stays instant; the names avoid those of ctxrel's modules, which Python sets on the package when they load). Nothing here computes a statistic of its own: the tables are the run directory's files, the verdict is
`analysis.summary.summarise`, exactly what `ctxrel report` prints.

    >>> import ctxrel
    >>> runs = ctxrel.load(run_dir)            # a study's run directory (or a list of them, with labels)
    >>> m = runs.metrics                       # every metric row, with `label` and `run` columns
    >>> m[(m.subset == "all") & (m.metric == "cf_acc")].set_index("step").value.to_dict()
    {0: 0.25, 8: 0.9, 16: 0.3}
    >>> items = runs.items                     # one row per item x sample x checkpoint x benchmark
    >>> items.groupby("step").contains_context.mean().round(2).to_dict()
    {0: 0.25, 8: 0.9, 16: 0.3}
    >>> sorted(items.columns)[:6]
    ['benchmark', 'category', 'checkpoint', 'contains_context', 'contains_parametric', 'context_answer']
    >>> v = runs.report(bootstrap=200).verdicts[0]
    >>> v.benchmark, v.subset, v.verdict, v.peak_step, round(v.drop, 2)
    ('cf_toy', 'all', 'inversion', 8, 0.6)

The doctests above read a toy run directory that the test suite writes (`run_dir`); any `ctxrel study` output
reads the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ctxrel.analysis.rundata import Run, load_run
from ctxrel.analysis.summary import summarise
from ctxrel.benchmarks.contexts import parse_variant
from ctxrel.config.settings import RunConfig, StudyConfig, from_dict, load_config, to_dict
from ctxrel.core.errors import CtxrelError
from ctxrel.report.build import group_runs

__all__ = ["load", "run_eval", "run_study", "make_config", "Results", "Report", "Verdict", "RunConfig",
           "StudyConfig"]

if TYPE_CHECKING:
    import pandas as pd

# the per-item table: these columns first, in this order (a record's other fields follow, sorted)
ITEM_COLUMNS = ("label", "run", "stage", "step", "epoch", "checkpoint", "benchmark", "variant", "context_kind",
                "decoding", "id", "sample", "category", "known", "outcome", "first_mention", "contains_context",
                "contains_parametric", "logp_context", "logp_parametric", "m_c", "output", "question",
                "context_answer", "parametric_answer")


@dataclass
class Verdict:
    """One trajectory's verdict and statistics, as `ctxrel report` prints them (one benchmark, one subset, one
    group of runs). rise = peak - start, drop = peak - final, each with its paired item-bootstrap 95% CI
    (`analysis.inversion`); `seeds_*` hold the interval across seeds when the group has 2+ seeds."""
    label: str
    benchmark: str
    subset: str
    metric: str
    verdict: str
    verdict_text: str
    n_items: int
    n_seeds: int
    n_points: int
    start_step: int | None = None
    start: float | None = None
    peak_step: int | None = None
    peak: float | None = None
    trough_step: int | None = None
    trough: float | None = None
    final_step: int | None = None
    final: float | None = None
    rise: float | None = None
    rise_ci: tuple[float, float] | None = None
    drop: float | None = None
    drop_ci: tuple[float, float] | None = None
    seeds_rise_ci: tuple[float, float] | None = None
    seeds_drop_ci: tuple[float, float] | None = None
    memory_return: float | None = None  # par-acc final - trough (generate mode)
    memory_return_ci: tuple[float, float] | None = None
    memory_return_significant: bool | None = None

    @classmethod
    def of(cls, label: str, benchmark: str, metric: str, subset: str, st: dict[str, Any]) -> "Verdict":
        v = cls(label, benchmark, subset, metric, st["verdict"], st["verdict_text"], st.get("n_items", 0),
                st.get("n_seeds", 0), st.get("n_points", 0))
        for mark in ("start", "peak", "trough", "final"):
            if st.get(mark):
                setattr(v, mark + "_step", st[mark]["step"])
                setattr(v, mark, st[mark]["value"])
        for name in ("rise", "drop"):
            for d in st.get(name, []):
                if d["basis"] == "items":
                    setattr(v, name, d["estimate"])
                    setattr(v, name + "_ci", (d["ci_low"], d["ci_high"]))
                elif d["basis"] == "seeds":
                    setattr(v, f"seeds_{name}_ci", (d["ci_low"], d["ci_high"]))
                elif getattr(v, name) is None:  # no per-item records: the estimate alone
                    setattr(v, name, d["estimate"])
        mr = st.get("memory_return") or {}
        if mr:
            first = mr["change"][0]
            v.memory_return, v.memory_return_ci = first["estimate"], (first["ci_low"], first["ci_high"])
            v.memory_return_significant = bool(mr["significant"])
        return v


@dataclass
class Report:
    """What `ctxrel report` computes, without writing a page: `groups` are the summaries (the `groups` of its
    summary.json: trajectory statistics, per-category statistics, series, flips, ID accuracy), `verdicts` one
    flat `Verdict` per (group, benchmark, subset)."""
    groups: list[dict[str, Any]]
    verdicts: list[Verdict] = field(default_factory=list)

    def table(self) -> "pd.DataFrame":
        """The verdicts as a DataFrame, one row each."""
        import pandas as pd

        return pd.DataFrame([asdict(v) for v in self.verdicts])


class Results:
    """Run directories read once (`analysis.rundata.load_run`), grouped by label (runs sharing a label are seeds
    of one study). Use `load` to make one."""

    def __init__(self, groups: list[tuple[str, list[Run]]]):
        self.groups = groups
        self._items: pd.DataFrame | None = None

    @property
    def runs(self) -> list[Run]:
        return [r for _, rs in self.groups for r in rs]

    def __repr__(self) -> str:
        parts = [f"{label}: {len(rs)} run(s)" for label, rs in self.groups]
        return f"<ctxrel.Results {'; '.join(parts)}>"

    @property
    def metrics(self) -> "pd.DataFrame":
        """Every metric row of every run (metrics.sqlite), with `label` and `run` (the directory) columns in front.
        `context` and `decoding` say how a conflict benchmark's row was scored; for rows written before those
        columns existed they are read from the benchmark name's variant tag."""
        import pandas as pd

        rows = [dict(label=label, run=str(r.path), **_scored_as(row, r)) for label, rs in self.groups for r in rs
                for row in r.rows]
        return pd.DataFrame(rows)

    @property
    def items(self) -> "pd.DataFrame":
        """One row per record: item x sample x checkpoint x benchmark (each context kind and decoding method is its
        own `variant`, split into `benchmark`, `context_kind`, `decoding`). Log-probabilities and M_C where the
        run scored likelihoods, the generation (`output`) where it generated; the prompt is left out (it is in
        the records files)."""
        if self._items is None:
            import pandas as pd

            rows = [row for label, rs in self.groups for r in rs for row in item_rows(r, label)]
            frame = pd.DataFrame(rows)
            first = [c for c in ITEM_COLUMNS if c in frame.columns]
            self._items = frame[first + sorted(c for c in frame.columns if c not in first)]
        return self._items

    def report(self, *, smooth: int = 0, bootstrap: int = 2000, seed: int = 0, flips_from: str = "peak",
               flips_to: str = "final") -> Report:
        """The statistics and verdict of every group, as `ctxrel report` computes them (same defaults)."""
        try:
            groups = [summarise(rs, label, smooth=smooth, n_boot=bootstrap, seed=seed, flips_from=flips_from,
                                flips_to=flips_to) for label, rs in self.groups]
        except ValueError as e:  # a flips_from / flips_to that names no checkpoint
            raise CtxrelError(str(e)) from None
        verdicts = [Verdict.of(g["label"], bench, b["metric"], subset, st) for g in groups
                    for bench, b in g["benchmarks"].items() for subset, st in b["subsets"].items()]
        return Report(groups, verdicts)


def _scored_as(row: dict[str, Any], run: Run) -> dict[str, Any]:
    """`row` with its context kind and decoding filled in from its benchmark name when a table older than those
    columns left them empty (conflict benchmarks only: the runs' records say which those are)."""
    if row.get("context") is not None or not any(b == row["benchmark"] for (_, b) in run.records):
        return row
    _, kind, decoding = parse_variant(row["benchmark"])
    return dict(row, context=kind, decoding=decoding)


def item_rows(run: Run, label: str) -> list[dict[str, Any]]:
    """The per-item rows of one run (see `Results.items`), in (step, checkpoint, benchmark, record) order."""
    out = []
    stages = {r["checkpoint"]: r["stage"] for r in run.rows if r.get("stage") is not None}  # runs with stages
    order = sorted(run.records, key=lambda k: (run.steps.get(k[0], -1), k[0], k[1]))
    for checkpoint, name in order:
        base, kind, decoding = parse_variant(name)
        step = run.steps.get(checkpoint)
        for rec in run.records[(checkpoint, name)]:
            row = {k: v for k, v in rec.items() if k not in ("prompt", "prompt_without_context")}
            row.update(label=label, run=str(run.path), step=step, epoch=run.epochs.get(checkpoint),
                       checkpoint=checkpoint, benchmark=base, variant=name, context_kind=kind, decoding=decoding)
            if checkpoint in stages:
                row.setdefault("stage", stages[checkpoint])
            out.append(row)
    return out


def load(runs: str | Path | Sequence[str | Path], labels: Sequence[str] | None = None, *,
         seeds: bool = False) -> Results:
    """Read one run directory or several. `labels` (one per run) name them; runs sharing a label are seeds of one
    study, and `seeds=True` makes every run a seed of one (as `ctxrel report --labels / --seeds`)."""
    paths = [str(runs)] if isinstance(runs, (str, Path)) else [str(r) for r in runs]
    grouped = group_runs(paths, list(labels) if labels is not None else None, seeds)
    return Results([(label, [load_run(p, label) for p in ps]) for label, ps in grouped])


def _config(cls, config, overrides: Sequence[str], verb: str):
    """A validated config of `cls` from a config object, a dict, a YAML file / preset / run directory, or None
    (defaults), then KEY=VALUE overrides. A dataclass built by hand is checked like a file (types, minimums)."""
    if config is None or isinstance(config, (str, Path)):
        return load_config(cls, config, list(overrides), verb=verb)
    if isinstance(config, cls):
        config = to_dict(config)
    if not isinstance(config, dict):
        raise CtxrelError(f"expected a {cls.__name__}, a dict, a YAML file or a preset name, got {type(config).__name__}")
    if overrides:
        from ctxrel.config.settings import apply_override

        config = dict(config)
        for o in overrides:
            apply_override(config, o)
    return from_dict(cls, config)


def run_eval(config: RunConfig | dict | str | Path | None = None, overrides: Sequence[str] = ()) -> Results:
    """`ctxrel eval` as a function: score `config.model` on `config.eval.benchmarks` into `config.out`
    (resumable), then read that directory; with `series.checkpoints` or `series.revisions` set, the checkpoint
    series into one trajectory (`ctxrel.evaluate.series`). `overrides`: KEY=VALUE strings as on the command line
    (`["eval.limit=20", "out=runs/nb"]`)."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.evaluate.run import run_eval as eval_verb

    cfg = _config(RunConfig, config, overrides, "eval")
    try:
        if cfg.series.revisions or cfg.series.checkpoints:  # a checkpoint series into one trajectory
            from ctxrel.evaluate.series import score_series

            score_series(cfg)
        else:
            eval_verb(cfg)
    finally:
        run_marker.release_all()
    return load(cfg.out)


def run_study(config: StudyConfig | dict | str | Path, overrides: Sequence[str] = (), *, plot: bool = True) -> Results:
    """`ctxrel study` as a function: finetune, score every checkpoint (resumable), then read the run directory.
    `config`: a StudyConfig, a dict, a YAML file, a preset name (`quickstart`) or a run directory."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.train.study import run_study as study_verb

    cfg = _config(StudyConfig, config, overrides, "study")
    try:
        study_verb(cfg, plot=plot)
    finally:
        run_marker.release_all()
    return load(cfg.out)


def make_config(verb: str = "eval", source: str | Path | None = None, overrides: Sequence[str] = ()):
    """A verb's config object (`RunConfig` for eval, `StudyConfig` for study) from a preset, a YAML file or a run
    directory, then KEY=VALUE overrides: edit its fields, then pass it to `run_eval` / `run_study`.

    >>> cfg = make_config("eval", overrides=["eval.limit=5", "out=runs/nb"])
    >>> cfg.model.name, cfg.eval.benchmarks, cfg.eval.limit, cfg.out
    ('smollm2-135m-instruct', ['cf_capitals'], 5, 'runs/nb')
    """
    classes = {"eval": RunConfig, "study": StudyConfig}
    if verb not in classes:
        raise CtxrelError(f"make_config({verb!r}): choose one of {', '.join(classes)}")
    return _config(classes[verb], source, overrides, verb)
