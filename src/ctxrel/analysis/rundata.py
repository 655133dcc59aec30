"""Read what the analysis needs from run directories (rundir/files.py contract) and shape it into trajectories.

This is the I/O edge of `analysis/`: metric rows, per-item records, the resolved config and the training
summary are read here, once; everything downstream (inversion.py, flips.py) is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxrel.analysis.inversion import Point
from ctxrel.analysis.items import is_conflict_record, item_outcomes, item_values, record_mode
from ctxrel.analysis.probes import heads_summary, lens_summary
from ctxrel.config.settings import read_yaml_mapping
from ctxrel.core import strict_json
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.matching import OUTCOMES
from ctxrel.core.probe_math import head_matrices, lens_curves
from ctxrel.rundir.files import (CONFIG_FILE, EVALS_DIR, METRICS_DB, TRAIN_LOG, TRAIN_SUMMARY, read_metrics,
                                 read_records, step_of)
from ctxrel.rundir.marker import writer


@dataclass
class Run:
    """One run directory, read: metric rows, conflict records per (checkpoint, benchmark), config, summary."""
    path: Path
    label: str
    rows: list[dict[str, Any]]
    records: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)  # checkpoint -> step (checkpoints with a step only)
    epochs: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    train_summary: dict[str, Any] | None = None
    live: dict[str, Any] | None = None  # the process writing the run while it was read (run_marker.writer)

    @property
    def epoch_boundaries(self) -> list:
        """Steps where epoch 1, 2 ... end; for a multi-stage study, [step, "sft | dpo"] where each stage after
        the first begins (ctxrel.train.stages), which the plots draw as labelled lines."""
        summary = self.train_summary or {}
        if summary.get("stages"):
            st = summary["stages"]
            return [[b["offset"], f"{a['name']} | {b['name']}"] for a, b in zip(st, st[1:])]
        return list(summary.get("epoch_boundaries") or [])

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The stages of a multi-stage study (name, kind, offset, total), [] otherwise."""
        return [{k: s[k] for k in ("name", "kind", "offset", "total")}
                for s in (self.train_summary or {}).get("stages") or []]

    def reward_rows(self) -> list[dict[str, Any]]:
        """The logged steps of the run's grpo stages, [] when it has none: {step, stage, reward,
        zero_variance_share, kl}, one per step (the last row of a step that a resume logged again). Read from
        train_log.jsonl only for a study with a grpo stage, so a damaged log never stops any other report."""
        grpo = {s["name"] for s in self.stages if s["kind"] == "grpo"}
        if not grpo:
            return []
        try:
            log = read_records(self.path / TRAIN_LOG)
        except InputError as e:  # its own remedy ("delete it to recompute") does not hold for a training log
            why = e.detail.removesuffix("; delete the file to recompute it")
            raise InputError(f"{why}; the grpo reward line reads this log: repair the line, or move the file away "
                             "to report without the reward", path=e.path, line=e.line) from None
        by_step = {r["step"]: r for r in log if r.get("stage") in grpo and isinstance(r.get("step"), int)
                   and isinstance(r.get("reward"), (int, float))}
        return [dict(step=k, stage=r["stage"], reward=float(r["reward"]),
                     zero_variance_share=r.get("zero_variance_share"), kl=r.get("kl"))
                for k, r in sorted(by_step.items())]

    def benchmarks(self) -> list[str]:
        """Conflict benchmarks with records at some checkpoint with a step, sorted."""
        return sorted({b for (c, b) in self.records if c in self.steps})

    def checkpoint_steps(self, benchmark: str) -> dict[int, str]:
        """{step: checkpoint} of the checkpoints with a step that have records of `benchmark`."""
        return {self.steps[c]: c for (c, b) in self.records if b == benchmark and c in self.steps}

    def mode(self, benchmark: str) -> str:
        for (c, b), recs in self.records.items():
            if b == benchmark and recs:
                return record_mode(recs)
        return "generate"


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read a run directory; CtxrelError naming the directory when it has no metrics or no records."""
    p = Path(path)
    if not p.is_dir():
        raise CtxrelError(f"{p}: no such run directory")
    if not (p / METRICS_DB).exists():
        raise CtxrelError(f"no metrics in {p} (metrics.sqlite missing): run ctxrel study/eval first")
    live = writer(p)  # a running study: what follows reads the checkpoints finished so far
    rows = read_metrics(p)  # read-only: a running study is neither written nor blocked
    if not rows:
        raise CtxrelError(f"no metrics in {p}: run ctxrel study/eval first")
    steps: dict[str, int] = {}
    epochs: dict[str, float] = {}
    safe_names = {r["benchmark"].replace("/", "_"): r["benchmark"] for r in rows}
    scored = {(r["checkpoint"], r["benchmark"]) for r in rows}
    for r in rows:
        if r.get("step") is not None:
            steps[r["checkpoint"]] = int(r["step"])
            if r.get("epoch") is not None:
                epochs[r["checkpoint"]] = float(r["epoch"])
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    evals = p / EVALS_DIR
    for d in sorted(evals.iterdir()) if evals.is_dir() else []:
        if not d.is_dir():
            continue
        if d.name not in steps and step_of(d.name) is not None:
            steps[d.name] = step_of(d.name)
        for f in sorted(d.glob("*.jsonl")):
            if f.name.endswith(".nocontext.jsonl"):
                continue
            bench = safe_names.get(f.stem, f.stem)
            if (d.name, bench) not in scored:
                continue  # records without metric rows: an evaluation still running (or crashed) there
            recs = read_records(f)
            _check_agreement(f, recs, rows, d.name, bench)
            if recs and is_conflict_record(recs[0]):
                _check_fields(f, recs)
                records[(d.name, bench)] = recs
    if not records:
        raise CtxrelError(f"no per-item records of conflict benchmarks in {evals}: run ctxrel study/eval first")
    config = _yaml(p / CONFIG_FILE)
    return Run(p, label or p.resolve().name, rows, records, steps, epochs, config, _summary(p / TRAIN_SUMMARY),
               live)


def live_text(run: Run) -> str | None:
    """One line saying that a run was read while a process was writing it, and what the reading covers."""
    if run.live is None:
        return None
    steps = sorted({run.steps[c] for (c, _) in run.records if c in run.steps})
    w = run.live
    return (f"live: {run.path} is being written by pid {w['pid']} (ctxrel {w['verb']}, started {w['started']}); "
            f"this reads a snapshot of the {len(steps)} checkpoint(s) evaluated so far (steps "
            f"{', '.join(map(str, steps)) or 'none'}), without its lock; run it again when the run has finished")


_CONFLICT_METRICS = {"cf_acc": "contains_context", "m_c": "m_c"}


def _check_agreement(path: Path, recs: list[dict[str, Any]], rows: list[dict[str, Any]], checkpoint: str,
                     benchmark: str) -> None:
    """Refuse a run whose records and metric rows disagree (a file cut short, records edited or lost their match
    fields, metric rows of other items): the report would otherwise describe other items than the table."""
    for metric, field_ in _CONFLICT_METRICS.items():
        row = next((r for r in rows if r["checkpoint"] == checkpoint and r["benchmark"] == benchmark
                    and r["subset"] == "all" and r["metric"] == metric), None)
        if row is None or row.get("n") is None:
            continue
        usable = [r for r in recs if isinstance(r, dict) and field_ in r and "id" in r]
        if len(usable) != len(recs):
            raise CtxrelError(f"{path}: {len(recs) - len(usable)} of its {len(recs)} records lack the '{field_}' "
                              f"(or 'id') field that metric {metric} was computed from; the run directory is "
                              "damaged: restore the file, or delete it and rerun the evaluation to recompute it")
        n_items = len({r["id"] for r in usable})
        if n_items != int(row["n"]):
            raise CtxrelError(f"{path}: holds records of {n_items} items but the metric rows of {checkpoint} / "
                              f"{benchmark} say n={int(row['n'])} ({metric}); records and metrics disagree (a file "
                              "cut short, or edited): rerun the same evaluation (`ctxrel eval --run DIR` for a "
                              "study) to recompute the metrics from the records, or restore the file")


_TEXT = (str, type(None))
_GENERATE_FIELDS = {"id": (str, int), "contains_context": (bool,), "contains_parametric": (bool,),
                    "outcome": (str,)}
_OPTIONAL_FIELDS = {"known": (bool,), "category": _TEXT, "first_mention": _TEXT, "output": _TEXT,
                    "question": _TEXT, "context_answer": _TEXT, "parametric_answer": _TEXT}
_LIKELIHOOD_FIELDS = {"id": (str, int), "m_c": (int, float)}


def _check_fields(path: Path, recs: list[dict[str, Any]]) -> None:
    """Every record of a conflict benchmark holds the fields the analysis reads, with their types (a damaged
    file can keep its JSON valid and lose a key, or turn a flag into text)."""
    required = _LIKELIHOOD_FIELDS if record_mode(recs) == "likelihood" else _GENERATE_FIELDS
    for n, r in enumerate(recs, 1):
        for key, types in (*required.items(), *_OPTIONAL_FIELDS.items()):
            if key not in r and key not in required:
                continue
            v = r.get(key)
            ok = (key in r and isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
                  and (key != "outcome" or v in OUTCOMES) and (key != "first_mention" or v in (None, *OUTCOMES)))
            if not ok:
                found = "missing" if key not in r else f"{v!r:.40}"
                raise CtxrelError(f"{path}: record {n}: field {key!r} is {found}, not what ctxrel writes; the run "
                                  "directory is damaged: restore the file, or delete it and rerun the evaluation")


def _summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return strict_json.load_object(path, "training summary", "delete it (rerunning the study rewrites it)")


def _yaml(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return read_yaml_mapping(path, "run config")


def trajectory_points(runs: list[Run], benchmark: str, metric: str, subset: str = "all",
                      category: str | None = None) -> list[Point]:
    """One Point per step present in every run (runs = seeds of one study), item values per run, by step.
    Checkpoints without a step (a lone `model` evaluation) are not part of a trajectory."""
    per_run: list[dict[int, tuple[str, dict[str, float]]]] = []
    for run in runs:
        got = {}
        for (ckpt, bench), recs in run.records.items():
            if bench == benchmark and ckpt in run.steps:
                got[run.steps[ckpt]] = (ckpt, item_values(recs, metric, subset, category))
        per_run.append(got)
    common = sorted(set.intersection(*(set(g) for g in per_run))) if per_run else []
    first = runs[0] if runs else None
    points = []
    for s in common:
        ckpt = per_run[0][s][0]
        items = [g[s][1] for g in per_run]
        if all(items):
            points.append(Point(s, ckpt, items, epoch=first.epochs.get(ckpt) if first else None))
    return points


def outcomes_at(run: Run, benchmark: str, checkpoint: str, subset: str = "all") -> dict[str, dict[str, Any]]:
    recs = run.records.get((checkpoint, benchmark))
    if recs is None:
        raise CtxrelError(f"{run.path}: no records of {benchmark} at {checkpoint} "
                          f"(evals/{checkpoint}/{benchmark.replace('/', '_')}.jsonl)")
    return item_outcomes(recs, subset)


def metric_series(run: Run, benchmark: str, metric: str, subset: str = "all") -> list[tuple[int, float, float | None,
                                                                                           float | None]]:
    """(step, value, ci_low, ci_high) of a metric-table series (ID accuracy, attention), by step; NaN skipped."""
    out = {}
    for r in run.rows:
        if (r["benchmark"] == benchmark and r["metric"] == metric and r["subset"] == subset
                and r.get("step") is not None and r.get("value") is not None):
            out[int(r["step"])] = (int(r["step"]), float(r["value"]), r.get("ci_low"), r.get("ci_high"))
    return [out[s] for s in sorted(out)]


def probe_records(run: Run, checkpoint: str, benchmark: str | None, kind: str) -> list[dict[str, Any]]:
    """Rows of a probe file (ctxrel.evaluate.probe_passes): evals/<checkpoint>/<benchmark>.<kind>.jsonl, or weights.jsonl for
    `benchmark=None, kind="weights"`; [] when absent."""
    name = "weights" if benchmark is None else f"{benchmark.replace('/', '_')}.{kind}"
    return read_records(run.path / EVALS_DIR / checkpoint / f"{name}.jsonl")


def probe_summaries(run: Run, benchmark: str, marks: dict[str, int], *, n_boot: int = 1000, seed: int = 0
                    ) -> dict[str, Any]:
    """The heads and lens summaries of one benchmark of a run (analysis.probes): heads at the peak vs the final
    checkpoint (the start vs the final one when the peak is final), the lens at every checkpoint."""
    by_step = {s: c for c, s in run.steps.items()}
    out: dict[str, Any] = {}
    lens = {s: lens_curves(recs) for s, c in sorted(by_step.items())
            if (recs := probe_records(run, c, benchmark, "lens"))}
    if lens:
        out["lens"] = lens_summary(lens, n_boot=n_boot, seed=seed)
    a, b = marks.get("peak"), marks.get("final")
    if a is not None and a == b:  # no fall after the peak: compare the start with the end instead
        a = marks.get("start")
    if a is not None and b is not None and a in by_step and b in by_step:
        ha = head_matrices(probe_records(run, by_step[a], benchmark, "heads"))
        hb = head_matrices(probe_records(run, by_step[b], benchmark, "heads"))
        if ha and hb:
            out["heads"] = heads_summary(ha, hb, a, b, n_boot=n_boot, seed=seed)
    return out


def weight_steps(run: Run) -> dict[int, list[dict[str, Any]]]:
    """weights.jsonl rows per step, for every checkpoint with a step that has them."""
    return {s: recs for c, s in sorted(run.steps.items(), key=lambda x: x[1])
            if (recs := probe_records(run, c, None, "weights"))}
