"""The three curation operations as plain functions of their config (`ctxrel.curate.config`; the CLI verbs
call them, so can Python code: `classify(ClassifyConfig(data="mixture", out="runs/c", limit=100))`).

Each reads a data set (`dataset.load_records`), writes `<out>/data.jsonl` (records in the input's own format,
readable by the trainer as `data.source`) and `<out>/manifest.json`, and returns a summary dict.

* `classify`: scores (resumable) -> C / C+S / S per record; data.jsonl holds every record annotated with
  `ctxrel_class`, `ctxrel_loss_with_context`, `ctxrel_loss_without_context`; plus report.json and
  loss_without_context.png.
* `filter_records`: keep context-only or context-critical (C) records and/or drop records naming listed
  entities; dropped.jsonl says which record went and why.
* `augment`: counterfactual QA examples mixed in at a ratio.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.curate.config import AugmentConfig, ClassifyConfig, FilterConfig
from ctxrel.curate.dataset import dataset_text, has_context, load_records, record_text
from ctxrel.curate.filters import KeywordMatcher, classify_score, keyword_list, loss_threshold, summarise_matches
from ctxrel.curate.manifest import data_input, file_input, output_entry, write_manifest
from ctxrel.rundir.files import atomic_write_text

DATA = "data.jsonl"


OUTPUTS = (DATA, "manifest.json", "scores.jsonl", "scores.settings.json", "report.json", "dropped.jsonl",
           "loss_without_context.png")


def claim_out_dir(out: str | Path, inputs: tuple = ()) -> Path:
    """Claim the output directory (new, empty, or a ctxrel curation output: `run_marker`) after checking that
    no input file is one of the files written there; the claim lasts until the command ends."""
    from ctxrel.rundir import marker as run_marker

    target = run_marker.refuse_dangerous(out, "--out")
    for spec in inputs:
        if isinstance(spec, str) and (spec == "mixture" or spec.startswith("mixture:")):  # shares, before any write
            from ctxrel.config.settings import MixtureConfig
            from ctxrel.curate.dataset import mixture_shares
            from ctxrel.train.mixture import kind_counts

            m = MixtureConfig()
            kind_counts(1, {**m.shares(), **mixture_shares(spec)})
    for spec in inputs:
        if spec is None or not Path(str(spec)).expanduser().is_file():
            continue
        f = Path(str(spec)).expanduser().resolve()
        if f.parent == target and f.name in OUTPUTS:
            raise CtxrelError(f"--out {out}: the input {spec} lies there and would be overwritten by this "
                              f"command's {f.name}; write to another directory")
    run_marker.claim(out, "curate", verb="curate")
    return Path(out)


def _threshold_rule(quantile: float | None, value: float | None, s_quantile: float | None = None) -> str:
    if value is not None:
        return f"fixed value {value}"
    if s_quantile is not None:
        return f"{s_quantile:g}-quantile of the loss of the records without context (S)"
    return f"{quantile:g}-quantile of loss without context over the scored context records"


def classify(cfg: ClassifyConfig, *, loaded=None) -> dict[str, Any]:
    """C / C+S / S composition of a data set under `cfg.model` (`loaded` = (model, tokenizer) already in memory)."""
    data, model, limit, seed, template, max_length = (cfg.data, cfg.model, cfg.limit, cfg.seed, cfg.template,
                                                      cfg.max_length)
    from ctxrel.curate.composition import composition, format_composition, plot_histogram
    from ctxrel.curate.scoring import SCORES_FILE, score_records

    quantile, threshold, s_quantile = cfg.threshold_quantile, cfg.threshold, cfg.threshold_s_quantile
    if threshold is not None or s_quantile is not None:
        quantile = None
    out = claim_out_dir(cfg.out, (data,))
    records, source = load_records(data, fmt=cfg.format, split=cfg.split, limit=limit, seed=seed)
    m, tok = loaded if loaded else (None, None)
    scores = score_records(records, out, model_spec=model, model=m, tok=tok, template=template,
                           max_length=max_length, batch_size=cfg.batch_size, device=cfg.device,
                           progress=cfg.progress)
    cut = loss_threshold(scores, quantile_=quantile, value=threshold, s_quantile=s_quantile)
    rule = _threshold_rule(quantile, threshold, s_quantile)
    classes, report = composition(records, scores, cut, rule=rule, n_examples=cfg.examples)
    report.update(model=model, data=data)
    annotated = [{**r.data, "ctxrel_class": k, "ctxrel_loss_with_context": s["loss_with"],
                  "ctxrel_loss_without_context": s["loss_without"]} for r, s, k in zip(records, scores, classes)]
    atomic_write_text(out / DATA, dataset_text(annotated))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    png = plot_histogram(scores, classes, cut, out / "loss_without_context.png",
                         title=f"{Path(data).name if data != 'mixture' else 'mixture'}: {len(records)} records, "
                               f"model {Path(model).name}")
    write_manifest(out, operation="curate classify",
                   parameters=dict(model=model, threshold_quantile=quantile, threshold=threshold,
                                   threshold_s_quantile=s_quantile, limit=limit,
                                   format=source.fmt, seed=seed, template=template, max_length=max_length,
                                   batch_size=cfg.batch_size),
                   inputs=[data_input(source, records)],
                   outputs=[output_entry(out, DATA, len(annotated)), output_entry(out, SCORES_FILE),
                            output_entry(out, "report.json"), output_entry(out, png.name)],
                   counts={"input": len(records), "kept": len(records), "dropped": {},
                           "classes": report["counts"]},
                   threshold=cut, threshold_rule=rule)
    return {"report": report, "table": format_composition(report), "out": str(out), "plot": str(png)}


def filter_records(cfg: FilterConfig, *, loaded=None) -> dict[str, Any]:
    """Keep `all`, `context-only` or `context-critical` (C) records, then drop those naming a listed entity.
    Context-critical needs loss-without-context scores: from a classify run (`cfg.scores` = its out), else they
    are computed into `cfg.out` (resumable)."""
    data, keep, limit, seed, model, template, max_length = (cfg.data, cfg.keep, cfg.limit, cfg.seed, cfg.model,
                                                            cfg.template, cfg.max_length)
    drop_quantile, drop_threshold, drop_keywords, scores = (cfg.drop_quantile, cfg.drop_threshold,
                                                            cfg.drop_keywords, cfg.scores)
    if keep not in ("all", "context-only", "context-critical"):
        raise CtxrelError(f"--keep {keep!r}: choose all, context-only or context-critical")
    if keep == "all" and not drop_keywords:
        raise CtxrelError("nothing to filter: give --keep context-only|context-critical and/or --drop-keywords")
    if drop_threshold is not None:
        drop_quantile = None
    out = claim_out_dir(cfg.out, (data, drop_keywords))
    records, source = load_records(data, fmt=cfg.format, split=cfg.split, limit=limit, seed=seed)
    inputs = [data_input(source, records)]
    reasons: dict[int, str] = {}
    extra: dict[str, Any] = {}
    parameters: dict[str, Any] = dict(keep=keep, limit=limit, format=source.fmt, seed=seed)

    if keep in ("context-only", "context-critical"):
        for r in records:
            if not has_context(r.data, r.fmt):
                reasons[r.index] = "no context (S)"
    if keep == "context-critical":
        from ctxrel.curate.scoring import SCORES_FILE, load_scores, score_records

        ctx = [r for r in records if r.index not in reasons]
        if scores is not None:
            rows = load_scores(Path(scores), ctx)
            inputs.append(file_input("scores", Path(scores) / SCORES_FILE))
        else:
            m, tok = loaded if loaded else (None, None)
            rows = score_records(ctx, out, model_spec=model, model=m, tok=tok, template=template,
                                 max_length=max_length, batch_size=cfg.batch_size, device=cfg.device,
                                 progress=cfg.progress)
            parameters.update(model=model, template=template, max_length=max_length)
        cut = loss_threshold(rows, quantile_=drop_quantile, value=drop_threshold)
        parameters.update(drop_quantile=drop_quantile, drop_threshold=drop_threshold)
        extra.update(threshold=cut, threshold_rule=_threshold_rule(drop_quantile, drop_threshold))
        for r, s in zip(ctx, rows):
            k = classify_score(s, cut)
            if k == "C+S":
                reasons[r.index] = "C+S: loss without context below the threshold"
            elif k != "C":
                reasons[r.index] = "unscored: no response token within --max-length"

    keyword_report = None
    if drop_keywords:
        names, path = keyword_list(drop_keywords)
        if path:
            inputs.append(file_input("keywords", path))
        matcher = KeywordMatcher(names, ignore_case=cfg.ignore_case)
        parameters.update(drop_keywords=drop_keywords, ignore_case=cfg.ignore_case)
        found: dict[int, list[str]] = {}
        for r in records:
            if r.index in reasons:
                continue
            hit = matcher.find(record_text(r.data, r.fmt))
            if hit:
                found[r.index] = hit
                reasons[r.index] = "keyword: " + ", ".join(hit)
        keyword_report = {"list": drop_keywords, "names": len(matcher.names), "records_dropped": len(found),
                          "names_matched": len(summarise_matches(list(found.values()))),
                          "records_per_name": summarise_matches(list(found.values()))}
        extra["keywords"] = keyword_report

    kept = [r.data for r in records if r.index not in reasons]
    if not kept:
        raise CtxrelError(f"the filter dropped all {len(records)} records; nothing to write")
    dropped_rows = [{"index": r.index, "where": r.where, "reason": reasons[r.index]}
                    for r in records if r.index in reasons]
    atomic_write_text(out / DATA, dataset_text(kept))
    atomic_write_text(out / "dropped.jsonl", dataset_text(dropped_rows))
    by_reason: dict[str, int] = {}
    for reason in reasons.values():
        key = "keyword" if reason.startswith("keyword: ") else reason
        by_reason[key] = by_reason.get(key, 0) + 1
    counts = {"input": len(records), "kept": len(kept), "dropped": by_reason,
              "kept_share": len(kept) / len(records)}
    write_manifest(out, operation="curate filter", parameters=parameters, inputs=inputs,
                   outputs=[output_entry(out, DATA, len(kept)), output_entry(out, "dropped.jsonl", len(dropped_rows))],
                   counts=counts, **extra)
    return {"counts": counts, "keywords": keyword_report, "out": str(out), **extra}


def augment(cfg: AugmentConfig) -> dict[str, Any]:
    """Mix counterfactual QA examples (`nq-swap=PATH` or `facts`) into the set so they make `cfg.ratio` of it."""
    data, counterfactual, ratio, seed, limit = cfg.data, cfg.counterfactual, cfg.ratio, cfg.seed, cfg.limit
    from ctxrel.curate import augment as A

    kind, path = A.parse_counterfactual(counterfactual)
    A.n_counterfactual(0, ratio)  # checks the ratio before anything is read
    out = claim_out_dir(cfg.out, (data, path))
    records, source = load_records(data, fmt=cfg.format, split=cfg.split, limit=limit, seed=seed)
    k = A.n_counterfactual(len(records), ratio)
    rng = random.Random(f"ctxrel-augment-{seed}")
    inputs = [data_input(source, records)]
    extra: dict[str, Any] = {}
    if kind == "nq-swap":
        pool, skipped = A.read_nq_swap(path)
        drawn = A.nq_swap_draw(pool, k, rng)
        inputs.append(file_input("counterfactual", path, source="nq-swap", usable_rows=len(pool),
                                 skipped_rows=skipped))
        extra["repeats"] = max(0, k - len(pool))
    else:
        drawn = A.facts_draw(k, rng)
        extra["repeats"] = k - len({(c.context, c.question) for c in drawn})
    added = [A.render(cf, source.fmt, i) for i, cf in enumerate(drawn)]
    mixed = A.mix([r.data for r in records], added, rng)
    atomic_write_text(out / DATA, dataset_text(mixed))
    counts = {"input": len(records), "kept": len(records), "dropped": {}, "added": {kind: len(added)},
              "output": len(mixed), "counterfactual_share": len(added) / len(mixed) if mixed else 0.0}
    write_manifest(out, operation="curate augment",
                   parameters=dict(counterfactual=counterfactual, ratio=ratio, seed=seed, limit=limit,
                                   format=source.fmt),
                   inputs=inputs, outputs=[output_entry(out, DATA, len(mixed))], counts=counts, **extra)
    return {"counts": counts, "out": str(out), "examples": added[:2], **extra}
