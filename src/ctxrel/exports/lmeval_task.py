"""A conflict benchmark as an lm-evaluation-harness task: `ctxrel export lm-eval BENCHMARK --out DIR`.

The directory gets three files, and lm-eval (0.4.x: `--include_path DIR`, or `TaskManager(include_path=DIR)`)
runs the task they describe on exactly the items `ctxrel eval` scores, with exactly its prompts:

* `<task>.jsonl` -- the items `ctxrel eval` selects for these settings (`--limit`, `--seed`), each with the
  prompt `ctxrel eval` renders for it (template, `--prompt`, `--instruct`; `chat` renders the model's own chat
  template, so the tokenizer of `--model` is read, never its weights), and both answers with their aliases;
* `<task>.yaml` -- greedy generation of `eval.max_new_tokens` tokens from that prompt, stopping at EOS as
  ctxrel does; metrics cf_acc, par_acc (means over items) and memorization_ratio = par / (cf + par), the
  share of parametric answers among the answers found (Goyal et al. 2025 read the two accuracies together);
* `utils.py` -- loads the items beside it (one utils.py serves every task exported there) and scores each generation with `ctxrel.core.matching.match`.

The exported utils.py *imports* ctxrel's matching rather than carrying a copy of it: normalisation, word
boundaries, aliases and nested answers ("New Cairo" vs "Cairo") are the part most likely to drift, and one
implementation cannot disagree with itself. The price is that lm-eval's environment needs ctxrel installed; its
core (numpy, pyyaml, tqdm, pandas) is small, and `matching` imports only the standard library.

Only what lm-eval's generate_until can reproduce is exported: generate mode, one greedy sample, conflict
contexts; anything else is refused in one sentence. The directory is a ctxrel directory (run marker): a
directory holding files ctxrel did not write is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ctxrel import __version__
from ctxrel.core.errors import CtxrelError

KIND = "lm-eval-task"  # run_marker kind of an export directory

UTILS = '''"""Helpers of the lm-evaluation-harness tasks written here by `ctxrel export lm-eval` (ctxrel {version}).

Each generation is scored with ctxrel's own answer matching (ctxrel.core.matching.match), the rules `ctxrel eval`
uses: normalisation, word-boundary containment, aliases, nested answers. Needs ctxrel importable.
"""

import json
from pathlib import Path

try:
    from ctxrel.core.matching import match
except ImportError as e:  # lm-eval's environment lacks ctxrel
    raise ImportError("these tasks score answers with ctxrel's matching rules: pip install ctxrel") from e



def load_items(items_file, **metadata):
    """The exported items beside this file as lm-eval's test split (lm-eval passes the task's metadata, which
    names the items file, as keywords)."""
    import datasets

    text = Path(__file__).with_name(Path(items_file).name).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {{"test": datasets.Dataset.from_list(rows)}}


def process_results(doc, results):
    """One item: does the generation contain the context answer (cf), the parametric answer (par)?"""
    m = match(results[0], doc["context_answers"], doc["parametric_answers"])
    cf, par = float(m.contains_context), float(m.contains_parametric)
    return {{"cf_acc": cf, "par_acc": par, "memorization_ratio": (cf, par)}}


def memorization_ratio(pairs):
    """par / (cf + par) over the items: the share of parametric answers among the answers found."""
    cf = sum(p[0] for p in pairs)
    par = sum(p[1] for p in pairs)
    return par / (cf + par) if cf + par else float("nan")
'''


def task_name(benchmark: str) -> str:
    """lm-eval task name of a ctxrel benchmark.

    >>> task_name("cf_capitals"), task_name("my-file.v2")
    ('ctxrel_cf_capitals', 'ctxrel_my_file_v2')
    """
    return "ctxrel_" + re.sub(r"[^A-Za-z0-9_]", "_", benchmark)


def check_exportable(cfg) -> None:
    """Refuse settings lm-eval's generate_until cannot reproduce (before anything is loaded)."""
    ev = cfg.eval
    problems = [(k, v, why) for k, v, ok, why in [
        ("eval.mode", ev.mode, ev.mode == "generate", "must be generate (lm-eval scores generations here)"),
        ("eval.samples", ev.samples, ev.samples == 1, "must be 1 (one greedy generation per item)"),
        ("eval.temperature", ev.temperature, ev.temperature == 0, "must be 0 (greedy)"),
        ("eval.decoding", ev.decoding, ev.decoding == ["greedy"], "must be [greedy] (cad/adacad are ctxrel's)"),
        ("eval.contexts", ev.contexts, ev.contexts == ["conflict"], "must be [conflict]"),
    ] if not ok]
    if problems:
        raise CtxrelError("the lm-eval export cannot reproduce " + "; ".join(f"{k}={v!r}: {why}"
                                                                           for k, v, why in problems))


def _chat_renderer(cfg):
    """The chat template of `model.name`'s tokenizer as a renderer (None without one); no weights are read."""
    from transformers import AutoTokenizer

    from ctxrel.models.loading import convert_gguf, resolve

    source = resolve(cfg.model.name)
    location = str(convert_gguf(Path(source.location))) if source.kind == "gguf" else source.location
    try:
        tok = AutoTokenizer.from_pretrained(location, trust_remote_code=cfg.model.trust_remote_code)
    except OSError as e:
        raise CtxrelError(f"could not read the tokenizer of model {cfg.model.name!r}: {str(e).rstrip('.')}") from None
    if not getattr(tok, "chat_template", None):
        return None
    return lambda messages: tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_builder(cfg):
    """The PromptBuilder `ctxrel eval` would use for this config (template `auto`/`chat` read the tokenizer)."""
    from ctxrel.core.prompts import PromptBuilder, resolve_template

    render = _chat_renderer(cfg) if cfg.eval.template in ("auto", "chat") else None
    return PromptBuilder(template=resolve_template(cfg.eval.template, render is not None), body=cfg.eval.prompt,
                         instruct=cfg.eval.instruct, render_chat=render)


def task_yaml(task: str, data: str, header: str, max_new_tokens: int) -> str:
    return f"""{header}
task: {task}
custom_dataset: !function utils.load_items
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{context_answers[0]}}}}"
generation_kwargs:
  until: []  # lm-eval adds the tokenizer's EOS; ctxrel stops there too
  do_sample: false
  max_gen_toks: {max_new_tokens}
process_results: !function utils.process_results
metric_list:
  - metric: cf_acc
    aggregation: mean
    higher_is_better: true
  - metric: par_acc
    aggregation: mean
    higher_is_better: false
  - metric: memorization_ratio
    aggregation: !function utils.memorization_ratio
    higher_is_better: false
metadata:
  version: 1
  ctxrel_version: "{__version__}"
  items_file: {data}
"""


def export_lm_eval(cfg, benchmark: str, out: str | Path) -> dict[str, Any]:
    """Write the lm-eval task of `benchmark` under the settings of `cfg` (a RunConfig) into `out`. Returns what
    was written: task name, files, item count, template."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.benchmarks.registry import load_benchmark, require_scorable
    from ctxrel.evaluate.selection import select_items
    from ctxrel.rundir.files import atomic_write_text
    from ctxrel.standard.tasks import standard_name

    check_exportable(cfg)
    if standard_name(benchmark):
        raise CtxrelError(f"{benchmark} is a standard task; lm-eval ships its own (the export is for conflict "
                          "benchmarks)")
    bench = require_scorable(load_benchmark(benchmark, skip_invalid=cfg.eval.skip_invalid),
                             skip_invalid=cfg.eval.skip_invalid)
    run_marker.check_owned(out, KIND)  # before the tokenizer is read
    items = select_items(bench.items, cfg.eval.limit, cfg.eval.seed)
    builder = prompt_builder(cfg)
    task = task_name(bench.name)
    data = f"{task}.jsonl"
    rows = [dict(id=it.id, category=it.category, question=it.question,
                 prompt=builder.with_context(it.context, it.question, it.prompt),
                 context_answers=list(it.context_answers), parametric_answers=list(it.parametric_answers))
            for it in items]
    header = (f"# lm-evaluation-harness task written by `ctxrel export lm-eval {benchmark}` (ctxrel {__version__}):\n"
              f"# {bench.name} v{bench.version}, {len(rows)} items, template {builder.template}, model "
              f"{cfg.model.name} (its tokenizer renders chat prompts), seed {cfg.eval.seed}.\n"
              f"# Run: lm_eval --include_path DIR --tasks {task} --model hf --model_args pretrained=MODEL")
    with run_marker.scope():
        path = run_marker.claim(out, KIND, verb=f"export lm-eval {benchmark}")
        atomic_write_text(path / data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_text(path / "utils.py", UTILS.format(version=__version__))
        atomic_write_text(path / f"{task}.yaml", task_yaml(task, data, header, cfg.eval.max_new_tokens))
    return dict(task=task, out=str(out), files=[f"{task}.yaml", "utils.py", data], n_items=len(rows),
                template=builder.template)
