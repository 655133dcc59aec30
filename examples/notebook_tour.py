"""A tour of ctxrel's Python API, in the order a notebook would use it (runs offline on the default model).

    python examples/notebook_tour.py [OUT] [STUDY_RUN ...]

1. build a config object and evaluate SmolLM2-135M-Instruct on 12 built-in conflict items (about a minute on
   2 CPU cores, the first time a minute more to convert the model), into OUT (default runs/notebook-tour);
2. look at the metric rows and the per-item table as pandas DataFrames;
3. given study run directories (`ctxrel study quickstart`), print their verdicts as `ctxrel report` does.
Rerunning resumes: the scored items are read back, not recomputed.
"""

import sys

import ctxrel

out = sys.argv[1] if len(sys.argv) > 1 else "runs/notebook-tour"
cfg = ctxrel.make_config("eval", overrides=[f"out={out}"])  # the defaults of `ctxrel eval`
cfg.eval.limit = 12
cfg.eval.benchmarks = ["cf_capitals"]
print("model:", cfg.model.name, "| benchmarks:", cfg.eval.benchmarks, "| limit:", cfg.eval.limit)

runs = ctxrel.run_eval(cfg)  # the same code as `ctxrel eval`; returns the run directory, read
print(runs)

m = runs.metrics
print("\nmetric rows (subset all):")
print(m[(m.subset == "all") & m.metric.isin(["cf_acc", "par_acc"])][["benchmark", "metric", "value", "ci_low",
                                                                      "ci_high", "n"]].to_string(index=False))

items = runs.items
print(f"\nper-item table: {len(items)} rows x {items.shape[1]} columns")
print("outcomes:", items.outcome.value_counts().to_dict())
print("by category (cf-acc):", items.groupby("category").contains_context.mean().round(2).to_dict())
print("\nthree items:")
print(items[["id", "known", "outcome", "context_answer", "parametric_answer", "output"]].head(3).to_string(index=False))

if len(sys.argv) > 2:  # study run directories: the verdict of each, as data
    report = ctxrel.load(sys.argv[2:]).report()  # the defaults of `ctxrel report`
    print("\nverdicts:")
    print(report.table()[["label", "benchmark", "subset", "n_items", "peak_step", "peak", "final", "drop",
                          "drop_ci", "verdict"]].to_string(index=False))
