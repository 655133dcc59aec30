"""A run's results as Every Eval Ever records (schema 0.3.0 of the `every-eval-ever` package): `ctxrel export eee`.

For every checkpoint x conflict benchmark of a run directory, two files in the datastore layout the package's
validator checks, `DIR/data/<benchmark>/<developer>/<model>/<uuid>.json` and `<uuid>_samples.jsonl`:

* the aggregate: one `evaluation_results` entry per metric row ctxrel wrote for that checkpoint and benchmark
  (subsets all and known; cf_acc, par_acc, the outcome shares, M_C in likelihood mode), with its bootstrap
  95% interval, plus memorization_ratio = par / (cf + par); the generation settings the records were made with;
* the samples: per generation, one instance record per item-level result (cf_acc and par_acc in generate mode,
  m_c in likelihood mode), each pointing at its aggregate entry by `evaluation_result_id`, as the schema asks
  when one sample feeds several results.

Model identity: the offline aliases map to the models they quantise (smollm2-135m-instruct ->
HuggingFaceTB/SmolLM2-135M-Instruct), a hub id stays itself, a local directory or GGUF file becomes
`local/<name>`; a study's checkpoint is a model of its own, `local/<model>-<run>-<checkpoint>`, with the base
model, step, epoch and tokens in `additional_details`. File names are UUID4s derived from (run, checkpoint,
benchmark), so exporting again rewrites the same files. Standard tasks (gsm8k, ...) are not exported: lm-eval
has its own converter for them. Pure apart from reading the run directory and writing the export.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ctxrel import __version__
from ctxrel.config.shipped import read_yaml_mapping
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import CONFIG_FILE, EVALS_DIR, RunDir, read_records

SCHEMA_VERSION = "0.3.0"
KIND = "eee"  # run_marker kind of an export directory
ALIASES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}
# metric -> (lower is better, description); context-following counts as "better" (what cf-acc measures)
METRICS = {
    "cf_acc": (False, "share of generations containing the context answer (counterfactual accuracy)"),
    "par_acc": (True, "share of generations containing the parametric (memorised) answer"),
    "memorization_ratio": (True, "par_acc / (cf_acc + par_acc): share of parametric answers among answers found"),
    "share_context": (False, "share of generations whose outcome is the context answer only"),
    "share_parametric": (True, "share of generations whose outcome is the parametric answer only"),
    "share_both": (True, "share of generations containing both answers"),
    "share_neither": (True, "share of generations containing neither answer"),
    "resolved_context": (False, "share giving the context answer, or both with the context answer first"),
    "resolved_parametric": (True, "share giving the parametric answer, or both with it first"),
    "m_c": (False, "p(context answer) / (p(context answer) + p(parametric answer)), mean over items"),
    "ll_context": (False, "share of items whose context answer is likelier than the parametric one"),
}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_identity(spec: str) -> tuple[str, str]:
    """(EEE model id, availability) of a ctxrel model spec.

    >>> model_identity("smollm2-135m-instruct")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'open_weights')
    >>> model_identity("/models/My Llama"), model_identity("runs/x/m.gguf")[0]
    (('local/My_Llama', 'unknown'), 'local/m')
    """
    if spec.lower() in ALIASES:
        return ALIASES[spec.lower()], "open_weights"
    path = Path(spec)
    if spec.startswith((".", "/", "~")) or path.suffix == ".gguf" or path.exists():
        return f"local/{_SAFE.sub('_', path.stem if path.suffix == '.gguf' else path.name).strip('_.') or 'model'}", \
            "unknown"
    return spec, "open_weights"


def stable_uuid(*parts: str) -> str:
    """A UUID4-shaped id derived from `parts` (a re-export names its files the same).

    >>> u = stable_uuid("run", "step-000016", "cf_capitals"); u[14], u == stable_uuid("run", "step-000016", "cf_capitals")
    ('4', True)
    """
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


def _result_id(benchmark: str, subset: str, metric: str) -> str:
    return f"{benchmark}/{subset}/{metric}"


def _result(benchmark: str, row: dict[str, Any], source: dict[str, Any], timestamp: str | None) -> dict[str, Any]:
    lower, text = METRICS[row["metric"]]
    out = dict(evaluation_result_id=_result_id(benchmark, row["subset"], row["metric"]),
               evaluation_name=benchmark, source_data=source,
               metric_config=dict(evaluation_description=f"{text}; items: {row['subset']}",
                                  metric_id=f"ctxrel.{row['metric']}", metric_name=row["metric"],
                                  metric_kind="proportion", metric_unit="proportion", lower_is_better=lower,
                                  score_type="continuous", min_score=0.0, max_score=1.0,
                                  additional_details=dict(subset=row["subset"])),
               score_details=dict(score=float(row["value"])))
    if timestamp:
        out["evaluation_timestamp"] = timestamp
    lo, hi = row.get("ci_low"), row.get("ci_high")
    unc: dict[str, Any] = {}
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        unc["confidence_interval"] = dict(lower=float(lo), upper=float(hi), confidence_level=0.95,
                                          method="bootstrap over items")
    if row.get("n"):
        unc["num_samples"] = int(row["n"])
    if unc:
        out["score_details"]["uncertainty"] = unc
    return out


def _ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """memorization_ratio per subset from its cf_acc and par_acc rows (both means over the same items)."""
    out = []
    for subset in sorted({r["subset"] for r in rows}):
        m = {r["metric"]: r for r in rows if r["subset"] == subset}
        if "cf_acc" in m and "par_acc" in m:
            cf, par = m["cf_acc"]["value"], m["par_acc"]["value"]
            if cf is not None and par is not None and cf + par > 0:
                out.append(dict(subset=subset, metric="memorization_ratio", value=par / (cf + par),
                                n=m["cf_acc"]["n"], ci_low=None, ci_high=None))
    return out


def _instances(records: list[dict[str, Any]], benchmark: str, evaluation_id: str, model_id: str
               ) -> list[dict[str, Any]]:
    out = []
    for r in records:
        sample_id = str(r["id"]) + (f"#{r['sample']}" if r.get("sample") else "")
        base = dict(schema_version=SCHEMA_VERSION, evaluation_id=evaluation_id, model_id=model_id,
                    evaluation_name=benchmark, sample_id=sample_id, interaction_type="single_turn")
        if "contains_context" in r:
            for metric, flag, answer in (("cf_acc", "contains_context", "context_answer"),
                                         ("par_acc", "contains_parametric", "parametric_answer")):
                hit = bool(r[flag])
                out.append(dict(base, evaluation_result_id=_result_id(benchmark, "all", metric),
                                input=dict(raw=r["question"], formatted=r.get("prompt"), reference=[r[answer]]),
                                output=dict(raw=[r["output"]]),
                                answer_attribution=[dict(turn_idx=0, source="output.raw",
                                                         extracted_value=r[answer] if hit else "",
                                                         extraction_method="ctxrel.core.matching containment",
                                                         is_terminal=True)],
                                evaluation=dict(score=1.0 if hit else 0.0, is_correct=hit)))
        elif "m_c" in r:
            out.append(dict(base, evaluation_result_id=_result_id(benchmark, "all", "m_c"),
                            input=dict(raw=r["question"], formatted=r.get("prompt"), reference=[r["context_answer"]]),
                            answer_attribution=[dict(turn_idx=0, source="loglikelihood", extracted_value=
                                                     f"{r['m_c']:.6f}", extraction_method="ctxrel.core.metrics.m_c",
                                                     is_terminal=True)],
                            evaluation=dict(score=float(r["m_c"]), is_correct=bool(r["m_c"] > 0.5))))
    return out


def build_records(run: str | Path, *, organization: str = "local", now: float | None = None
                  ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """[(datastore folder `data/<benchmark>/<developer>/<model>`, aggregate, instance records)] for every
    checkpoint x conflict benchmark of run directory `run` that has metric rows and records."""
    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise CtxrelError(f"{run}: no {CONFIG_FILE} there (not a ctxrel run directory)")
    config = read_yaml_mapping(run / CONFIG_FILE)
    spec = str((config.get("model") or {}).get("name") or "unknown")
    base_id, availability = model_identity(spec)
    rows = [r for r in RunDir(run).metrics() if r["metric"] in METRICS]
    retrieved = str(int(now if now is not None else time.time()))
    out = []
    for checkpoint, bench in sorted({(r["checkpoint"], r["benchmark"]) for r in rows}):
        path = run / EVALS_DIR / checkpoint / f"{bench}.jsonl"
        records = read_records(path) if path.is_file() else []
        if not records:
            continue
        mine = [r for r in rows if r["checkpoint"] == checkpoint and r["benchmark"] == bench
                and r["value"] is not None and math.isfinite(r["value"])]
        mine += _ratio_rows(mine)
        settings_file = path.with_name(f"{bench}.settings.json")
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        trained = checkpoint.startswith("step-")
        if trained:
            model_id = f"local/{base_id.rsplit('/', 1)[-1]}-{_SAFE.sub('_', run.resolve().name)}-{checkpoint}"
        else:
            model_id = base_id
        developer, model = model_id.split("/", 1)
        folder = f"data/{_SAFE.sub('_', bench)}/{developer}/{_SAFE.sub('_', model.replace('/', '_'))}"
        first = next((r for r in mine if r.get("created")), {})
        evaluation_id = f"{bench}/{model_id}/{retrieved}"
        details = {"ctxrel_model": spec, "run_directory": run.resolve().name, "checkpoint": checkpoint,
                   "deployment_type": "self_deployed", "model_availability": "unknown" if trained else availability}
        if trained:
            meta = next((r for r in rows if r["checkpoint"] == checkpoint), {})
            details.update(base_model=base_id, step=str(meta.get("step")), epoch=str(meta.get("epoch")),
                           tokens=str(meta.get("tokens")))
        source = dict(dataset_name=bench, source_type="other",
                      additional_details={k: str(settings[k]) for k in ("version", "items_sha256") if k in settings})
        generation = dict(max_tokens=int(settings.get("max_new_tokens", 32)),
                          temperature=float(settings.get("temperature", 0.0)),
                          prompt_template=str(settings.get("prompt") or settings.get("template") or "auto"))
        results = [_result(bench, r, source, first.get("created")) for r in mine]
        for res in results:
            res["generation_config"] = dict(generation_args=generation)
        instances = _instances(records, bench, evaluation_id, model_id)
        aggregate = dict(
            schema_version=SCHEMA_VERSION, evaluation_id=evaluation_id, retrieved_timestamp=retrieved,
            source_metadata=dict(source_name="ctxrel run directory", source_type="evaluation_run",
                                 source_organization_name=organization,
                                 evaluator_relationship="first_party" if trained else "third_party"),
            eval_library=dict(name="ctxrel", version=__version__,
                              additional_details=dict(matching="ctxrel.core.matching: normalised word-boundary "
                                                               "containment with aliases")),
            model_info=dict(name=model_id.split("/", 1)[1], id=model_id, developer=developer,
                            inference_platform="local", inference_engine=dict(name="transformers"),
                            additional_details=details),
            evaluation_results=results)
        if first.get("created"):
            aggregate["evaluation_timestamp"] = first["created"]
        out.append((folder, aggregate, instances))
    if not out:
        raise CtxrelError(f"{run}: no conflict-benchmark results to export (no metric rows with per-item records)")
    return out


def export_eee(run: str | Path, out: str | Path, *, organization: str = "local") -> dict[str, Any]:
    """Write `build_records(run)` under `out` (a new, empty or earlier EEE export directory)."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.rundir.files import atomic_write_text

    records = build_records(run, organization=organization)
    n_inst = 0
    with run_marker.scope():
        root = run_marker.claim(out, KIND, verb="export eee")
        for folder, aggregate, instances in records:
            name = stable_uuid(str(Path(run).resolve()), aggregate["model_info"]["additional_details"]["checkpoint"],
                               aggregate["evaluation_results"][0]["evaluation_name"])
            text = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in instances)
            aggregate["detailed_evaluation_results"] = dict(
                format="jsonl", file_path=f"{folder}/{name}_samples.jsonl", hash_algorithm="sha256",
                checksum=hashlib.sha256(text.encode()).hexdigest(), total_rows=len(instances))
            (root / folder).mkdir(parents=True, exist_ok=True)
            atomic_write_text(root / folder / f"{name}_samples.jsonl", text)
            atomic_write_text(root / folder / f"{name}.json", json.dumps(aggregate, indent=1, ensure_ascii=False))
            n_inst += len(instances)
    return dict(out=str(out), n_aggregate=len(records), n_instances=n_inst, schema_version=SCHEMA_VERSION)
