"""Parity of ctxrel's standard tasks with EleutherAI's lm-evaluation-harness, on the same items and model.

    pip install lm_eval==0.4.13        # not a ctxrel dependency: this check only
    python perf/lm_eval_parity.py --data $CTXREL_TEST_DATA [--limit 100] [--gsm8k-limit 20]

For each task the script picks ctxrel's seeded, stratified items, scores them with ctxrel (HF backend), then
writes the same items as local JSON Lines in the hub datasets' schema and scores them with lm-eval's *own* task
definitions (its installed YAML for mmlu_<subject>, arc_challenge, gsm8k, read with lm-eval's loader; only the
dataset location is replaced), through lm-eval's Python API on the same in-memory model (`HFLM(pretrained=model)`,
`TaskManager(include_defaults=False)`, offline). Two deviations, both forced by the local data and stated:
gsm8k's 5 shots are the first 5 test rows (no train split here; lm-eval's sampler is switched to `first_n` so both
take them in file order) and squad has no v1.1 task in lm-eval, so an inline task with lm-eval `squadv2`'s prompt
and stop string is used, capped at ctxrel's 32 new tokens, and its generations are scored by ctxrel's SQuAD
metric. Printed per task: both engines' accuracy, per-item agreement, and items/s of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def ctxrel_scores(lm, task, items):
    from ctxrel.rundir.files import RunDir
    from ctxrel.standard.runner import evaluate_task

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rows, _ = evaluate_task(lm, task, items, RunDir(d))
        seconds = time.perf_counter() - t0
        from ctxrel.rundir.files import read_records
        records = {r["id"]: r for r in read_records(RunDir(d).eval_file("model", task))}
    return {r["metric"]: r["value"] for r in rows}, records, seconds


def _lm_eval_yaml(name: str) -> dict:
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(lm_eval.__file__).parent / "tasks"
    path = {"arc_challenge": root / "arc" / "arc_challenge.yaml", "gsm8k": root / "gsm8k" / "gsm8k.yaml"}.get(
        name, root / "mmlu" / "default" / f"{name}.yaml")
    cfg = dict(load_yaml(path, resolve_func=True))
    while "include" in cfg:  # resolve the include chain as lm-eval does (included file first, then overrides)
        base = dict(load_yaml(path.parent / cfg.pop("include"), resolve_func=True))
        cfg = {**base, **cfg}
    for key in ("tag", "group", "dataset_name", "task_alias"):
        cfg.pop(key, None)
    return cfg


def _write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def lm_eval_specs(task, items, data: Path, tmp: Path, shots: int):
    """lm-eval task configs over exactly `items` (same order) -> (specs, {lm-eval task name: [item ids]})."""
    specs, ids = [], {}
    if task == "arc_challenge":
        by_id = {}
        with open(data / "arc_challenge" / "ARC-Challenge-Test.jsonl") as f:
            for line in f:
                row = json.loads(line)
                by_id[f"arc_challenge/{row['id']}"] = row
        rows = [by_id[it.id] for it in items]
        hub = [dict(id=r["id"], question=r["question"]["stem"], answerKey=r["answerKey"],
                    choices=dict(text=[c["text"] for c in r["question"]["choices"]],
                                 label=[c["label"] for c in r["question"]["choices"]])) for r in rows]
        cfg = _lm_eval_yaml("arc_challenge")
        cfg.update(dataset_path="json", dataset_kwargs=dict(data_files=dict(test=_write_jsonl(tmp / "arc.jsonl", hub))),
                   training_split=None, validation_split=None, test_split="test", num_fewshot=0)
        specs.append(cfg)
        ids["arc_challenge"] = [it.id for it in items]
    elif task == "mmlu":
        by_subject = defaultdict(list)
        for it in items:
            by_subject[it.category].append(it)
        for subject, its in sorted(by_subject.items()):
            with open(data / "mmlu" / "test" / f"{subject}_test.csv") as f:
                test = list(csv.reader(f))[1:]
            with open(data / "mmlu" / "dev" / f"{subject}_dev.csv") as f:
                dev = list(csv.reader(f))[1:]
            def hub(r):
                return dict(question=r[0], subject=subject, choices=r[1:5], answer=int(r[5]))
            test_rows = [hub(test[int(it.id.rsplit("/", 1)[1])]) for it in its]
            cfg = _lm_eval_yaml(f"mmlu_{subject}")
            files = dict(test=_write_jsonl(tmp / f"mmlu_{subject}_test.jsonl", test_rows),
                         dev=_write_jsonl(tmp / f"mmlu_{subject}_dev.jsonl", [hub(r) for r in dev]))
            cfg.update(dataset_path="json", dataset_kwargs=dict(data_files=files), num_fewshot=shots)
            specs.append(cfg)
            ids[cfg["task"]] = [it.id for it in its]
    elif task == "gsm8k":
        with open(data / "gsm8k" / "test.jsonl") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        chosen = [rows[int(it.id.split("/")[1])] for it in items]
        files = dict(train=_write_jsonl(tmp / "gsm8k_train.jsonl", rows[:shots]),
                     test=_write_jsonl(tmp / "gsm8k_test.jsonl", chosen))
        cfg = _lm_eval_yaml("gsm8k")
        cfg.update(dataset_path="json", dataset_kwargs=dict(data_files=files), num_fewshot=shots,
                   fewshot_config=dict(sampler="first_n"))
        specs.append(cfg)
        ids["gsm8k"] = [it.id for it in items]
    elif task == "squad":
        hub = [dict(title=it.prompt.split("\n\n")[0].removeprefix("Title: "),
                    context=it.prompt.split("\n\nBackground: ", 1)[1].split("\n\nQuestion: ", 1)[0],
                    question=it.prompt.rsplit("\n\nQuestion: ", 1)[1].removesuffix("\n\nAnswer:"),
                    answers=list(it.answers)) for it in items]
        specs.append(dict(task="squad_v11_parity", dataset_path="json", output_type="generate_until",
                          dataset_kwargs=dict(data_files=dict(test=_write_jsonl(tmp / "squad.jsonl", hub))),
                          test_split="test", num_fewshot=0,
                          doc_to_text="Title: {{title}}\n\nBackground: {{context}}\n\nQuestion: {{question}}"
                                      "\n\nAnswer:",
                          doc_to_target="{{answers[0]}}",
                          generation_kwargs=dict(until=["\n"], do_sample=False, max_gen_toks=32),
                          metric_list=[dict(metric="exact_match", aggregation="mean", higher_is_better=True)]))
        ids["squad_v11_parity"] = [it.id for it in items]
    return specs, ids


def lm_eval_scores(model, tok, task, items, data, shots, batch_size):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ctxrel.standard.scoring import score_generation

    with tempfile.TemporaryDirectory() as d:
        specs, ids = lm_eval_specs(task, items, data, Path(d), shots)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
        t0 = time.perf_counter()
        out = simple_evaluate(model=lm, tasks=specs, task_manager=TaskManager(include_defaults=False),
                              log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                              torch_random_seed=0, fewshot_random_seed=0)
        seconds = time.perf_counter() - t0
    by_id = {it.id: it for it in items}
    per_item = {}
    for name, samples in out["samples"].items():
        for s in samples:
            item_id = ids[name][s["doc_id"]]
            if task in ("mmlu", "arc_challenge"):
                per_item[item_id] = dict(acc=s["acc"], acc_norm=s.get("acc_norm"))
            elif task == "gsm8k":
                # one sample per lm-eval filter (strict-match, flexible-extract), each with its exact_match
                entry = per_item.setdefault(item_id, dict(output=s["resps"][0][0]))
                entry[{"strict-match": "strict", "flexible-extract": "flexible"}[s["filter"]]] = s["exact_match"]
            else:
                text = s["resps"][0][0]
                per_item[item_id] = dict(output=text, **score_generation(by_id[item_id], text))
    return per_item, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder holding mmlu/, arc_challenge/, gsm8k/, squad/")
    ap.add_argument("--tasks", default="mmlu,arc_challenge,squad,gsm8k")
    ap.add_argument("--limit", type=int, default=100, help="items per task (mmlu, arc_challenge, squad)")
    ap.add_argument("--gsm8k-limit", type=int, default=20, help="gsm8k items (256-token generations are slow)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)

    import torch

    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import load_model
    from ctxrel.standard.tasks import DEFAULT_SHOTS, load_task, stratified_limit

    data = Path(args.data)
    model, tok, name = load_model(args.model, device="cpu")
    lm = HFBackend(model, tok, name=name, batch_size=args.batch_size)
    print(f"{name}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    for task in args.tasks.split(","):
        limit = args.gsm8k_limit if task == "gsm8k" else args.limit
        items = stratified_limit(load_task(task, data / task), limit, seed=0)
        ours, records, t_ours = ctxrel_scores(lm, task, items)
        theirs, t_theirs = lm_eval_scores(model, tok, task, items, data, DEFAULT_SHOTS[task], args.batch_size)
        n = len(items)
        if task in ("mmlu", "arc_challenge"):
            metrics = ["acc", "acc_norm"] if task == "arc_challenge" else ["acc"]
            for m in metrics:
                agree = sum(records[i][m] == theirs[i][m] for i in records) / n
                print(f"{task:14s} {m:8s} n={n:4d}  ctxrel {ours[m]:.3f}  lm-eval "
                      f"{sum(theirs[i][m] for i in theirs) / n:.3f}  per-item agreement {agree:.3f}")
        elif task == "gsm8k":
            same_out = sum(records[i]["output"].strip() == theirs[i]["output"].strip() for i in records) / n
            for ours_key, their_key in (("strict_match", "strict"), ("flexible_match", "flexible")):
                print(f"{task:14s} {ours_key:14s} n={n:4d}  ctxrel {sum(r[ours_key] for r in records.values()) / n:.3f}"
                      f"  lm-eval {sum(theirs[i][their_key] for i in theirs) / n:.3f}  identical outputs {same_out:.3f}")
        else:
            same_out = sum(records[i]["output"].strip() == theirs[i]["output"].strip() for i in records) / n
            for m in ("exact_match", "f1"):
                print(f"{task:14s} {m:8s} n={n:4d}  ctxrel {ours[m]:.3f}  lm-eval generations "
                      f"{sum(theirs[i][m] for i in theirs) / n:.3f}  identical outputs {same_out:.3f}")
        print(f"{task:14s} items/s: ctxrel {n / t_ours:.2f}, lm-eval {n / t_theirs:.2f}, "
              f"ratio {t_theirs / t_ours:.2f}")


if __name__ == "__main__":
    main()
