"""Configuration: nested dataclasses per concern, filled from YAML and `a.b=c` overrides.

Every verb's settings come through `load_config`: a YAML file, a shipped preset (`ctxrel.config.shipped`, `base:`
inheritance) or a run directory's config.yaml, then `KEY=VALUE` overrides, then the CLI flags (derived from
the fields by `ctxrel.config.flags`). Unknown keys are errors that name the valid keys; values are checked against the
field's type and its declared choices; the resolved config (every default filled in) is written into every run
directory. `VERBS` says which dataclass each verb takes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctxrel.config.shipped import read_source, read_yaml_mapping  # noqa: F401  (read_yaml_mapping: callers use config's name)
from ctxrel.core.errors import CtxrelError
from ctxrel.core.prompts import TEMPLATES, TRAIN_TEMPLATES

TRACKERS = ("tensorboard", "trackio", "wandb")  # train.report_to (ctxrel.train.trackers)


def option(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, flag: str | tuple = (),
           choices: tuple | None = None, group: str | None = None, required: bool | str = False,
           help: str | None = None) -> Any:
    """A config field with what the CLI needs to know about it, declared next to the field: `flag` = short
    aliases of its derived `--key` flag (`--model`), `choices` = the valid values (each element, for a list),
    `group` = flags of one group are mutually exclusive, `required` = the verb refuses to run without it (a
    string: how the CLI gives it, e.g. RUN for a positional argument).
    Help comes from the field's comment in the source (`ctxrel.config.flags`), or `help`."""
    meta = {"flags": (flag,) if isinstance(flag, str) else tuple(flag), "choices": choices, "group": group,
            "required": required, "help": help}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)



@dataclass
class ModelConfig:
    name: str = option("smollm2-135m-instruct", flag="--model")  # hub id, local directory, .gguf file, or the
    #                                                                 offline alias (gemma3-270m: extra `gemma`)
    adapter: str | None = option(None, flag="--adapter")  # PEFT adapter directory (safetensors)
    reference: str | None = option(None, flag="--reference-model")  # model asked without context by the knowledge filter; None = `name`
    device: str | None = option(None, flag="--device")  # cpu, cuda, cuda:1 ... (None = cuda when available)
    trust_remote_code: bool = option(False, flag="--trust-remote-code")  # run model code from the hub/directory (only for sources you trust)
    batch_size: int = option(16, flag="--batch-size")  # prompts per forward pass; higher = faster until memory runs out
    decode: str = option("own", flag="--decode", choices=("own", "hf"))  # greedy generation: ctxrel's loop (finished rows leave the batch) or transformers' generate (lm-eval's path)


@dataclass
class EvalConfig:
    # NAME, NAME=PATH or PATH; the flag is repeatable; standard tasks: gsm8k, mmlu, arc_challenge, squad
    benchmarks: list[str] = option(factory=lambda: ["cf_capitals"], flag="--benchmark")
    template: str = option("auto", flag="--template", choices=TEMPLATES)  # auto = chat if the tokenizer has one
    prompt: str | None = option(None, flag="--prompt")  # custom body format with {context} and {question}
    instruct: bool = option(False, flag="--instruct")  # add "Answer the question using the background above."
    limit: int | None = option(None, flag="--limit")  # items per benchmark (seeded, stratified by category)
    samples: int = option(1, flag="--samples")  # generations per item
    temperature: float = option(0.0, flag="--temperature")  # sampling temperature; 0 = greedy
    max_new_tokens: int = option(32, flag="--max-new-tokens")  # tokens generated per answer
    # generate (containment metrics) | likelihood (M_C from answer log-probs) | both (generation on the --limit
    # items, and M_C on every item of the benchmark, recorded as benchmark NAME@likelihood)
    mode: str = option("generate", flag="--mode", choices=("generate", "likelihood", "both"))
    attention: bool = option(False, flag="--attention")  # also record attention from the answer position to context vs question tokens
    # probes inside the model at every checkpoint: weights (change per layer and projection), heads (attention
    # per head to context / question / rest), lens (logit lens of the two answers per layer); [] = none
    probes: list[str] = option(factory=list, choices=("weights", "heads", "lens"))
    knowledge_filter: bool = option(True, flag="--knowledge-filter")  # also report metrics on items the reference model knows without context
    skip_invalid: bool = option(False, flag="--skip-invalid")  # skip (and count) invalid rows instead of stopping at the first
    shots: int | None = option(None, flag="--shots")  # few-shot examples for standard tasks (None = the task's lm-eval default)
    # standard tasks (gsm8k, mmlu, arc_challenge, squad; NAME or NAME=PATH) whose mean is `id_accuracy`, the
    # study's x-axis. Data: NAME=PATH, else $CTXREL_DATA/NAME, else the HF hub (needs network)
    standard: list[str] = field(default_factory=list)
    standard_limit: int | None = None  # items per standard task (None = eval.limit); same items every checkpoint
    seed: int = option(0, flag="--seed")  # item sampling (--limit) and generation
    bootstrap: int = 1000  # bootstrap resamples for 95% intervals
    # decoding-time mitigations (ctxrel.core.decoding): greedy | cad | adacad. Greedy is always scored too (the
    # reference of every change); cad/adacad run a second, no-context branch: about 2x the generation cost
    decoding: list[str] = field(default_factory=lambda: ["greedy"])
    cad_alpha: list[float] = field(default_factory=lambda: [1.0])  # CAD's weight (Shi et al.: 1.0); a list sweeps
    # context kinds (ctxrel.benchmarks.contexts): conflict | gold (agrees with memory) | irrelevant (another subject's);
    # conflict is always scored
    contexts: list[str] = field(default_factory=lambda: ["conflict"])


@dataclass
class SeriesConfig:
    """A trajectory from a checkpoint series ctxrel did not train (`ctxrel.evaluate.series`): every entry is NAME or
    NAME@STEP, comma-separated or repeated; without @STEP the step is read from the name (step1000, step-000048,
    checkpoint-500, stage1-step140000-tokens587B)."""
    # hub revisions (branches, tags) of model.name, e.g. step1000,step2000 (downloads: needs the network)
    revisions: list[str] = option(factory=list, flag="--revisions")
    # local model directories, or adapters on model.name (PEFT, or a study checkpoint), e.g. ckpt/a@0,ckpt/b@100
    checkpoints: list[str] = option(factory=list, flag="--checkpoints")
    # two steps whose weights have the same fingerprint: stop (one sentence naming both) or skip the later one
    on_duplicate: str = option("stop", flag="--on-duplicate", choices=("stop", "skip"))


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)  # score a checkpoint series into one trajectory
    out: str = option("runs/eval", flag="--out")  # run directory (rerunning the same command resumes)


@dataclass
class MixtureConfig:
    """The built-in instruction mixture (C / C+S / S: docs/design.md, 'Words'); proportions must sum to 1."""
    n: int = 2000  # examples generated
    c: float = 0.2  # context-critical: invented entities, the answer is only in the context
    cs: float = 0.6  # non-context-critical: real facts, the context repeats what the model knows
    ci: float = 0.0  # non-context-critical, irrelevant context: the context states other facts, memory answers

    def shares(self) -> dict[str, float]:
        """The kind -> share mapping that `train.mixture.generate_mixture` takes."""
        return {"c": self.c, "cs": self.cs, "ci": self.ci, "s": self.s}
    s: float = 0.2  # subject-critical: real facts, no context (pure recall)


@dataclass
class PairsConfig:
    """Built-in preference pairs (`data.source: pairs`, ctxrel.train.pairs) for a dpo stage."""
    n: int = 256  # pairs generated from the training fact tables
    irrelevant: float = 0.0  # share of KnowPO irrelevant-context pairs (chosen = memory); the rest Context-DPO


@dataclass
class DataConfig:
    # "mixture" (built-in, offline), a local .json/.jsonl(.gz) file, or an HF dataset id; in a dpo stage: "pairs"
    # (built-in preference pairs, data.pairs) or a local pairs file (prompt, chosen, rejected)
    source: str = "mixture"
    format: str = option("auto", choices=("auto", "alpaca", "chat", "squad"))  # auto = from the record fields
    split: str = "train"  # split of an HF dataset
    template: str = option("auto", choices=TRAIN_TEMPLATES)  # auto = chat if the tokenizer has one, else alpaca
    max_length: int = 256  # tokens per example; longer ones are truncated (counted and reported)
    limit: int | None = None  # examples used, after a seeded shuffle (None = all)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)


@dataclass
class LoraSettings:
    rank: int = 128  # the study's rank; higher = more trainable parameters and memory
    alpha: float = 256.0  # scale = alpha / rank
    dropout: float = 0.05  # LoRA dropout on the adapter inputs
    targets: list[str] = field(default_factory=lambda: ["all-linear"])  # module names, or all-linear


@dataclass
class TrainConfig:
    mode: str = option("lora", choices=("lora", "full", "qk"))  # qk = only attention query/key projections)
    qk_lora: bool = False  # qk mode: LoRA on q/k (true) or their full weights (false)
    lora: LoraSettings = field(default_factory=LoraSettings)
    lr: float = 1e-4  # AdamW peak learning rate (the study: 1e-4 for LoRA, 1e-5 for full finetuning)
    schedule: str = option("linear", choices=("linear", "cosine", "constant"))  # after warmup
    warmup: float = 0.03  # share of the steps spent warming up linearly from 0
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    clip: float = 1.0  # max gradient norm (0 = no clipping)
    epochs: int = 2  # passes over the training data
    max_steps: int | None = None  # stop earlier than `epochs` (None = all epochs)
    batch_size: int = 8  # examples per optimizer step, over all processes
    micro_batch_size: int | None = None  # examples per forward pass and process (None = batch_size / processes)
    seed: int = 0  # data order, LoRA init and dropout
    # put examples of similar length in the same batch (seeded shuffle, then sort within windows of 50 batches,
    # then shuffle the batches): far less padding, so much faster steps on CPU; but long and short examples
    # rarely share a batch, so the trajectory differs from unsorted batching (same examples per epoch)
    group_by_length: bool = False
    keep_weights: bool = True  # keep every evaluated checkpoint's weights (for `ctxrel eval --run`); the latest
    #                            checkpoint is always kept with its optimizer state so a rerun resumes
    # experiment trackers (ctxrel.train.trackers) that receive loss, lr, tokens/s and every checkpoint's metric rows,
    # with the training step as x-axis: tensorboard (<out>/tensorboard), trackio (local SQLite, extra `trackio`),
    # wandb (extra `wandb`); [] = none. A tracker that is not installed is refused before training
    report_to: list[str] = option(factory=lambda: ["tensorboard"], choices=TRACKERS)
    tracker_project: str = "ctxrel"  # trackio / wandb project; the run is named after `out`
    tensorboard: bool = True  # false = leave tensorboard out of train.report_to (the switch before report_to)


@dataclass
class StudyEvalConfig(EvalConfig):
    every: int = 50  # evaluate (and checkpoint) every this many optimizer steps; step 0 is always evaluated
    early: list[int] = field(default_factory=list)  # extra steps, e.g. [5, 10, 20] (the peak often comes early)


@dataclass
class StageConfig:
    """One stage of a multi-stage study (ctxrel.train.stages): its own data and optimisation, on the study's
    step axis, starting from the previous stage's last checkpoint."""
    kind: str = option("sft", choices=("sft", "dpo", "grpo"))  # sft (supervised) | dpo (pairs) | grpo (reward)
    name: str | None = None  # label in metrics, logs and reports (None = kind; repeated kinds get -2, -3 ...)
    # first stage only: a checkpoint directory of another run to start from (read, never written); None = the
    # base model (first stage) or the previous stage's last checkpoint
    init: str | None = None
    data: dict = field(default_factory=dict)  # overrides of the study's data section, e.g. {source: pairs}
    train: dict = field(default_factory=dict)  # overrides of the study's train section (lr, max_steps, ...)
    beta: float = 0.1  # dpo: strength of the pull to the reference (DPO's beta; IPO's tau); grpo: KL weight
    loss: str = option("sigmoid", choices=("sigmoid", "ipo"))  # dpo: sigmoid = DPO, ipo = IPO
    label_smoothing: float = 0.0  # dpo (sigmoid): share of pairs taken as mislabelled (conservative DPO)
    skip_invalid: bool = False  # dpo, grpo: skip (and count) invalid pair records instead of stopping at the first
    generations: int = 4  # grpo: completions sampled per prompt (a group); at least 2
    completion_tokens: int = 16  # grpo: tokens generated per completion at most (short answers)
    temperature: float = 1.0  # grpo: sampling temperature of the completions


@dataclass
class StudyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: StudyEvalConfig = field(default_factory=StudyEvalConfig)
    out: str = "runs/study"  # run directory (rerunning the same command resumes)
    # training stages run one after another on one step axis (ctxrel.train.stages), e.g. [{kind: sft},
    # {kind: dpo, data: {source: pairs}, train: {lr: 5.0e-6, max_steps: 32}}]; [] = one sft stage (data, train)
    stages: list[StageConfig] = field(default_factory=list)


# Lower bounds of numeric settings, checked when a config is built (before any model loads). Every float must
# also be finite: `train.lr=.inf` or `nan` is refused by `_check_type`. Training keys are checked further by
# `ctxrel.train.loop.check_train_config`.
MINIMUM = {"model.batch_size": 1, "eval.limit": 1, "eval.samples": 1, "eval.temperature": 0.0,
           "eval.max_new_tokens": 1, "eval.shots": 0, "eval.standard_limit": 1, "eval.seed": 0, "eval.bootstrap": 1,
           "eval.every": 1, "train.seed": 0, "train.batch_size": 1, "data.mixture.n": 1, "data.pairs.n": 1,
           "bootstrap": 1, "smooth": 0}  # the last two: ctxrel report's --bootstrap and --smooth


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key)
            except CtxrelError:
                continue
        raise CtxrelError(f"config key {key}: {value!r} is not a valid {tp}")
    if origin is dict:  # free-form mappings (theory variants): YAML values, checked by their owner
        if not isinstance(value, dict):
            raise CtxrelError(f"config key {key}: expected a mapping, got {value!r}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if dataclasses.is_dataclass(inner):  # a list of sections (study stages): each checked like a section
            if not isinstance(value, list):
                raise CtxrelError(f"config key {key}: expected a list of mappings, got {value!r}")
            return [from_dict(inner, v, f"{key}[{i}].") for i, v in enumerate(value)]
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise CtxrelError(f"config key {key}: expected a list, got {value!r}")
        return [_check_type(v, inner, key) for v in value]
    if tp is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = None
        if number is not None and not math.isfinite(number):
            raise CtxrelError(f"config key {key}: {value!r} is not a finite number")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise CtxrelError(f"config key {key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict[str, Any] | None, prefix: str = ""):
    """Build dataclass `cls` from nested dicts; unknown keys raise an error listing the valid ones."""
    data = data or {}
    if not isinstance(data, dict):
        raise CtxrelError(f"config section {prefix.rstrip('.') or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    odd = [k for k in data if not isinstance(k, str)]  # YAML keys may be numbers, booleans, null
    if odd:
        where = f"in section {prefix.rstrip('.')!r} " if prefix else ""
        raise CtxrelError(f"config key {odd[0]!r} {where}is not a name (YAML read it as "
                          f"{type(odd[0]).__name__}); valid keys: {', '.join(prefix + k for k in fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section {prefix.rstrip('.')!r} " if prefix else ""
        shown = (prefix + k if (prefix + k).isprintable() else repr(prefix + k) for k in unknown)  # one line
        raise CtxrelError(f"unknown config key(s) {where}{', '.join(shown)}; valid keys: "
                          f"{', '.join(prefix + k for k in fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key + ".")
        else:
            kwargs[name] = _check_type(value, tp, key)
            choices = fields[name].metadata.get("choices")
            if choices and isinstance(kwargs[name], list):  # every element one of them (repeats dropped)
                bad = [v for v in kwargs[name] if v not in choices]
                if bad:
                    raise CtxrelError(f"config key {key}: {', '.join(map(repr, bad))} is not one of "
                                      f"{', '.join(choices)}")
                kwargs[name] = list(dict.fromkeys(kwargs[name]))
            elif choices and kwargs[name] is not None and kwargs[name] not in choices:
                raise CtxrelError(f"config key {key}: {kwargs[name]!r} is not one of {', '.join(choices)}")
            if key in MINIMUM and kwargs[name] is not None and kwargs[name] < MINIMUM[key]:
                raise CtxrelError(f"config key {key}: {kwargs[name]!r} is below its minimum {MINIMUM[key]!r}"
                                  + (" (the flag is --" + name.replace("_", "-") + ")" if key.startswith(
                                      ("eval.", "model.")) else ""))
    return cls(**kwargs)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `a.b=c` to nested dict `data` (the value is parsed as YAML: 3, 0.5, true, [a, b], null)."""
    if "=" not in assignment:
        raise CtxrelError(f"override {assignment!r}: expected KEY=VALUE, e.g. eval.limit=20")
    key, raw = assignment.split("=", 1)
    set_key(data, key.strip(), parse_value(raw, f"override {assignment!r}"), what=f"override {assignment!r}")


def parse_value(raw: str, what: str) -> Any:
    """A KEY=VALUE override's value, read as YAML (3, 0.5, true, [a, b], null); one sentence when it is not
    plain YAML (malformed, a `!!python` tag, nesting too deep)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise CtxrelError(f"{what}: the value is not plain YAML ({first}); quote it or fix it") from None
    except RecursionError:
        raise CtxrelError(f"{what}: the value is nested too deeply") from None


def set_key(data: dict[str, Any], key: str, value: Any, *, what: str | None = None) -> None:
    """Set dotted `key` (e.g. eval.limit) in nested dict `data` to an already typed value."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise CtxrelError(f"{what or 'config key ' + key}: {p} is not a section")
    node[parts[-1]] = value


def load_config(cls, source: str | Path | None = None, overrides: list[str] = (),
                settings: dict[str, Any] | None = None, *, verb: str | None = None):
    """The one way a verb's settings are built: `source` (a YAML file, a shipped preset name of `verb`, or a run
    directory holding config.yaml; `base:` chains resolved by `ctxrel.config.shipped`), then `overrides` (KEY=VALUE
    strings, values read as YAML), then `settings` (already typed values by dotted key: the CLI flags), checked
    into dataclass `cls`. Every mistake is one sentence naming the file or key."""

    data = read_source(source, verb) if source is not None else {}
    for o in overrides:
        apply_override(data, o)
    for key, value in (settings or {}).items():
        set_key(data, key, value)
    return from_dict(cls, data)


def load_study_config(source: str, overrides: list[str] = (), settings: dict[str, Any] | None = None) -> StudyConfig:
    """A study's config from a YAML file, a shipped preset (`quickstart`, `paper/llama2-7b-alpaca-lora`) or a run
    directory, then KEY=VALUE overrides and typed settings (`load_config`)."""
    return load_config(StudyConfig, source, overrides, settings, verb="study")


def load(path: str | Path | None = None, overrides: list[str] = (), cls=RunConfig):
    """Config from an optional YAML file plus overrides, validated (`load_config` with a file)."""
    if path is not None and not Path(path).is_file():
        raise CtxrelError(f"config file {path} not found")
    return load_config(cls, path, overrides)


# verb -> "module:Class" of the dataclass it takes (imported when that verb runs: torch stays out of --help)
VERBS = {"eval": "ctxrel.config.settings:RunConfig", "study": "ctxrel.config.settings:StudyConfig", "train": "ctxrel.config.settings:StudyConfig",
         "curate classify": "ctxrel.curate.config:ClassifyConfig", "curate filter": "ctxrel.curate.config:FilterConfig",
         "curate augment": "ctxrel.curate.config:AugmentConfig", "curate pairs": "ctxrel.curate.config:PairsBuildConfig",
         "curate substitute": "ctxrel.curate.config:SubstituteConfig", "report": "ctxrel.report.cli:ReportConfig",
         "theory": "ctxrel.theory.driver:TheoryRunConfig", "synth": "ctxrel.synth.lab:SynthConfig"}


# verb -> "module:function" of its own checks on a built config (limits that span several keys)
VERB_CHECKS = {"synth": "ctxrel.synth.lab:validate", "theory": "ctxrel.theory.driver:validate"}


def config_class(verb: str):
    """The dataclass of `verb` (a key of VERBS)."""
    import importlib

    module, name = VERBS[verb].split(":")
    return getattr(importlib.import_module(module), name)


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
