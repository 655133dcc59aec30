"""Standard benchmarks as data: local files -> items whose prompts follow lm-evaluation-harness's task definitions.

Each task mirrors one lm-eval (v0.4) task; the prompt strings are built exactly as lm-eval's `fewshot_context`
builds them: `description + (shot_text + " " + shot_target + "\\n\\n") * k + doc_text`, with the target
delimiter " " prefixed to every continuation.

* mmlu -- lm-eval `mmlu_<subject>` (group `mmlu`, the default non-CoT variant). Description
  "The following are multiple choice questions (with answers) about {subject with spaces}.\\n\\n"; doc text
  "{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"; continuations " A" .. " D"; shots are the
  first k rows of the subject's dev split (lm-eval's `first_n` sampler), 5 by default (the study's and the Open
  LLM Leaderboard's setting); metric acc. Files: `mmlu/{dev,test}/<subject>_{dev,test}.csv` with a header row
  `question,choice0..choice3,answer` (0-based answer index). Category = subject.
* arc_challenge -- lm-eval `arc_challenge`. Doc text "Question: {stem}\\nAnswer:"; continuations are the choice
  texts (" " + text); metrics acc and acc_norm (log-likelihood divided by the choice's length in characters).
  0-shot by default; k > 0 shots come from the first k rows of `ARC-Challenge-Dev.jsonl` next to the test file
  (lm-eval samples them at random from train; ARC-Challenge is run 0-shot in the study, so this is a convenience).
  File: AI2's `ARC-Challenge-Test.jsonl`; gold = index of `answerKey` among the choice labels.
* gsm8k -- lm-eval `gsm8k` (not `gsm8k-cot`). Doc text "Question: {question}\\nAnswer:"; shot target is the full
  worked solution ending in "#### N"; 5 shots by default from lm-eval's `first_n` sampler over the train split.
  Only test.jsonl is available here, so the shots are the first k test rows and those rows are NOT evaluated.
  Generation stops at lm-eval's `until`: "Question:", "</s>", "<|im_end|>". Metric: exact match of the final
  number (see `ctxrel.standard.scoring`). Answers hold the normalised final number.
* squad -- SQuAD v1.1 as generation, 0-shot, prompt "Title: {title}\\n\\nBackground: {context}\\n\\n
  Question: {question}\\n\\nAnswer:" (lm-eval `squadv2`'s prompt; v1.1 has no unanswerable questions), stop at
  "\\n" as lm-eval's squadv2 does; metrics exact match and F1 with the official SQuAD normalisation. File: the
  official layout `dev-v1.1.json(.gz)`. Answers: every annotator's answer text.

Every bad row raises `InputError` naming the file and line (JSON Lines, CSV) or key path (SQuAD JSON). Items come
in file order (MMLU: subjects sorted by name, then file order) and ids are `task/...` so they never move.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence, TypeVar, Union

from ctxrel.core import strict_json
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.sampling import by_category, round_robin

STANDARD_TASKS = ("gsm8k", "mmlu", "arc_challenge", "squad")
DEFAULT_SHOTS = {"gsm8k": 5, "mmlu": 5, "arc_challenge": 0, "squad": 0}
TARGET_DELIMITER = " "  # lm-eval: between a prompt and its continuation / target
FEWSHOT_DELIMITER = "\n\n"  # lm-eval: after every shot
GSM8K_STOP = ("Question:", "</s>", "<|im_end|>")
SQUAD_STOP = ("\n",)
MMLU_LETTERS = ("A", "B", "C", "D")
_MMLU_COLUMNS = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def standard_name(arg: str) -> str | None:
    """The task a benchmark argument names (`mmlu`, `mmlu=PATH`), or None when it names no standard task."""
    name = arg.partition("=")[0].strip()
    return name if name in STANDARD_TASKS else None


@dataclass(frozen=True)
class MCItem:
    """Multiple choice scored by log-likelihood: the model's pick is the continuation it finds most likely."""
    id: str
    task: str
    category: str
    prompt: str
    choices: tuple[str, ...]  # continuations, each with the leading target delimiter " "
    gold: int


@dataclass(frozen=True)
class GenItem:
    """Generation scored against reference answers after truncating the output at the first stop string."""
    id: str
    task: str
    category: str
    prompt: str
    answers: tuple[str, ...]
    stop: tuple[str, ...] = ("\n\n",)


Item = Union[MCItem, GenItem]
T = TypeVar("T", MCItem, GenItem)


# ------------------------------------------------------------------------------------------------ prompt formats

def mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_text(question: str, choices: Sequence[str]) -> str:
    lines = [question.strip()] + [f"{letter}. {c}" for letter, c in zip(MMLU_LETTERS, choices)]
    return "\n".join(lines) + "\nAnswer:"


def qa_text(question: str) -> str:
    """ARC-Challenge and GSM8K share lm-eval's doc text."""
    return f"Question: {question}\nAnswer:"


def squad_prompt(title: str, context: str, question: str) -> str:
    return f"Title: {title}\n\nBackground: {context}\n\nQuestion: {question}\n\nAnswer:"


def fewshot_prefix(shots: Sequence[tuple[str, str]], description: str = "") -> str:
    """lm-eval's context: the description, then each (doc text, target) shot joined by the two delimiters."""
    return description + "".join(text + TARGET_DELIMITER + target + FEWSHOT_DELIMITER for text, target in shots)


# --------------------------------------------------------------------------------------------------------- files

def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _resolve(name: str, path: str | Path, candidates: Sequence[str]) -> Path:
    """The task's file (or folder for MMLU): `path` itself, a candidate inside it, or inside `path/name`."""
    p = Path(path)
    if not p.exists():
        raise CtxrelError(f"{name}: {p} does not exist; pass the task's file or its folder "
                          f"(e.g. $CTXREL_TEST_DATA/{name})")
    if p.is_file():
        return p
    for folder in (p, p / name):
        for c in candidates:
            if (folder / c).exists():
                return folder / c
    raise CtxrelError(f"{name}: found none of {', '.join(candidates)} in {p} (or {p / name})")


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for every non-blank line."""
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = strict_json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg}); each line must be one JSON object",
                                 path=str(path), line=line_no) from None
            except strict_json.BadJSON as e:
                raise InputError(f"unusable JSON: {e}", path=str(path), line=line_no) from None
            if not isinstance(row, dict):
                raise InputError(f"expected a JSON object, got {type(row).__name__}", path=str(path), line=line_no)
            yield line_no, row


def _string(row: dict, key: str, path: Path, line: int | None = None, where: str | None = None) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "missing" if key not in row else f"not a non-empty string ({value!r:.40})"
        raise InputError(f"field '{key}' is {what}", path=str(path), line=line,
                         key=f"{where}.{key}" if where else key)
    return value


def _check_shots(name: str, shots: int | None) -> int:
    k = DEFAULT_SHOTS[name] if shots is None else shots
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise CtxrelError(f"{name}: shots must be a whole number >= 0, got {shots!r}")
    return k


# ---------------------------------------------------------------------------------------------------------- mmlu

def _mmlu_rows(path: Path) -> list[tuple[int, str, tuple[str, ...], int]]:
    """(line, question, choices, answer) for every row of one subject CSV."""
    rows = []
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header != _MMLU_COLUMNS:
                raise InputError(f"header must be {','.join(_MMLU_COLUMNS)}, got {header!r}", path=str(path), line=1)
            start = reader.line_num + 1
            for rec in reader:
                line, start = start, reader.line_num + 1
                if not rec or not any(x.strip() for x in rec):
                    continue
                if len(rec) != 6:
                    raise InputError(f"expected 6 columns ({','.join(_MMLU_COLUMNS)}), got {len(rec)}",
                                     path=str(path), line=line)
                if not rec[0].strip():
                    raise InputError("empty question", path=str(path), line=line, key="question")
                if rec[5].strip() not in ("0", "1", "2", "3"):
                    raise InputError(f"answer must be a choice index 0-3, got {rec[5]!r}", path=str(path),
                                     line=line, key="answer")
                rows.append((line, rec[0], tuple(rec[1:5]), int(rec[5])))
        except csv.Error as e:
            raise InputError(f"malformed CSV: {e}", path=str(path), line=reader.line_num) from None
    return rows


def _load_mmlu(path: str | Path, shots: int) -> list[MCItem]:
    root = _resolve("mmlu", path, ["test"]).parent
    if (root / "test").is_dir():
        test_dir, dev_dir = root / "test", root / "dev"
    else:
        raise CtxrelError(f"mmlu: expected a folder with test/ and dev/ subfolders, got {path}")
    files = sorted(test_dir.glob("*_test.csv")) + sorted(test_dir.glob("*_test.csv.gz"))
    if not files:
        raise CtxrelError(f"mmlu: no <subject>_test.csv files in {test_dir}")
    items: list[MCItem] = []
    for test_file in sorted(files, key=lambda p: p.name):
        subject = test_file.name.split("_test.csv")[0]
        prefix = mmlu_description(subject)
        if shots:
            dev_file = dev_dir / test_file.name.replace("_test.csv", "_dev.csv")
            if not dev_file.exists():
                raise InputError(f"dev file for the {shots}-shot prompt is missing; add it or use shots=0",
                                 path=str(dev_file))
            dev = _mmlu_rows(dev_file)
            if len(dev) < shots:
                raise InputError(f"has {len(dev)} examples, fewer than the {shots} shots asked for",
                                 path=str(dev_file))
            prefix = fewshot_prefix([(mmlu_text(q, c), MMLU_LETTERS[a]) for _, q, c, a in dev[:shots]], prefix)
        items += _mmlu_items(subject, prefix, [(q, c, a) for _, q, c, a in _mmlu_rows(test_file)])
    return items


def _mmlu_items(subject: str, prefix: str, rows: Sequence[tuple[str, Sequence[str], int]]) -> list[MCItem]:
    return [MCItem(id=f"mmlu/{subject}/{n}", task="mmlu", category=subject, prompt=prefix + mmlu_text(q, c),
                   choices=tuple(TARGET_DELIMITER + x for x in MMLU_LETTERS), gold=a)
            for n, (q, c, a) in enumerate(rows)]


# ------------------------------------------------------------------------------------------------- arc_challenge

def _arc_rows(path: Path) -> Iterator[tuple[int, str, str, tuple[str, ...], int]]:
    """(line, id, stem, choice texts, gold index)."""
    for line, row in _jsonl(path):
        q = row.get("question")
        if not isinstance(q, dict):
            raise InputError("field 'question' must be an object {stem, choices}", path=str(path), line=line,
                             key="question")
        stem = _string(q, "stem", path, line, "question")
        choices = q.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(
                isinstance(c, dict) and isinstance(c.get("text"), str) and isinstance(c.get("label"), str)
                for c in choices):
            raise InputError("question.choices must be a list of at least 2 {text, label} objects",
                             path=str(path), line=line, key="question.choices")
        labels = [c["label"] for c in choices]
        key = row.get("answerKey")
        if key not in labels:
            raise InputError(f"answerKey {key!r} is not one of the choice labels {labels}", path=str(path),
                             line=line, key="answerKey")
        yield line, str(row.get("id", line)), stem, tuple(c["text"] for c in choices), labels.index(key)


def _load_arc(path: str | Path, shots: int) -> list[MCItem]:
    test_file = _resolve("arc_challenge", path, ["ARC-Challenge-Test.jsonl", "ARC-Challenge-Test.jsonl.gz"])
    prefix = ""
    if shots:
        dev_file = test_file.with_name(test_file.name.replace("Test", "Dev"))
        if not dev_file.exists():
            raise InputError(f"dev file for the {shots}-shot prompt is missing; add it or use shots=0",
                             path=str(dev_file))
        dev = list(_arc_rows(dev_file))[:shots]
        if len(dev) < shots:
            raise InputError(f"has fewer than the {shots} shots asked for", path=str(dev_file))
        prefix = fewshot_prefix([(qa_text(stem), c[g]) for _, _, stem, c, g in dev])
    items, seen = [], set()
    for line, qid, stem, choices, gold in _arc_rows(test_file):
        if qid in seen:
            raise InputError(f"duplicate id {qid!r}", path=str(test_file), line=line, key="id")
        seen.add(qid)
        items.append(_arc_item(qid, prefix, stem, choices, gold))
    return items


def _arc_item(qid: str, prefix: str, stem: str, choices: Sequence[str], gold: int) -> MCItem:
    return MCItem(id=f"arc_challenge/{qid}", task="arc_challenge", category="arc_challenge",
                  prompt=prefix + qa_text(stem), choices=tuple(TARGET_DELIMITER + c for c in choices), gold=gold)


# --------------------------------------------------------------------------------------------------------- gsm8k

def _load_gsm8k(path: str | Path, shots: int) -> list[GenItem]:
    file = _resolve("gsm8k", path, ["test.jsonl", "test.jsonl.gz"])
    rows = []
    for line, row in _jsonl(file):
        question, answer = _string(row, "question", file, line), _string(row, "answer", file, line)
        if "#### " not in answer:
            raise InputError("answer must end in a line '#### <final number>'", path=str(file), line=line,
                             key="answer")
        rows.append((question, answer))
    if len(rows) <= shots:
        raise InputError(f"has {len(rows)} rows; {shots} shots would leave nothing to evaluate", path=str(file))
    return _gsm8k_items(rows[shots:], rows[:shots], first=shots)


_GSM8K_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def gsm8k_normalize(text: str) -> str:
    """lm-eval's exact_match preprocessing for gsm8k (regexes_to_ignore, ignore_case); also the gold's form."""
    for pattern in _GSM8K_IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def _gsm8k_items(rows: Sequence[tuple[str, str]], shots: Sequence[tuple[str, str]], first: int = 0) -> list[GenItem]:
    """Items for (question, worked answer) rows numbered from `first`, after the (question, answer) shots."""
    prefix = fewshot_prefix([(qa_text(q), a) for q, a in shots])
    return [GenItem(id=f"gsm8k/{n}", task="gsm8k", category="gsm8k", prompt=prefix + qa_text(q),
                    answers=(gsm8k_normalize(a),), stop=GSM8K_STOP) for n, (q, a) in enumerate(rows, first)]


# --------------------------------------------------------------------------------------------------------- squad

def _load_squad(path: str | Path, shots: int) -> list[GenItem]:
    if shots:
        raise CtxrelError(f"squad is 0-shot (as lm-eval's squadv2); got shots={shots}")
    file = _resolve("squad", path, ["dev-v1.1.json.gz", "dev-v1.1.json"])
    try:
        with _open_text(file) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", path=str(file), line=e.lineno) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise InputError("expected the official SQuAD layout {\"data\": [{title, paragraphs}]}", path=str(file),
                         key="data")

    def bad(message: str, key: str) -> InputError:
        return InputError(message, path=str(file), key=key)

    items, seen = [], set()
    for a, article in enumerate(data):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise bad("article must be an object with a 'paragraphs' list", f"data[{a}]")
        title = _string(article, "title", file, where=f"data[{a}]")
        for p, para in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise bad("paragraph must be an object with 'context' and a 'qas' list", where)
            context = _string(para, "context", file, where=where)
            for i, qa in enumerate(para["qas"]):
                at = f"{where}.qas[{i}]"
                if not isinstance(qa, dict):
                    raise bad("question must be an object {id, question, answers}", at)
                qid, question = _string(qa, "id", file, where=at), _string(qa, "question", file, where=at)
                answers = qa.get("answers")
                if not isinstance(answers, list) or not answers or not all(
                        isinstance(x, dict) and isinstance(x.get("text"), str) for x in answers):
                    raise bad("answers must be a non-empty list of {text} objects (v1.1 has no unanswerable "
                              "questions)", f"{at}.answers")
                if qid in seen:
                    raise bad(f"duplicate question id {qid!r}", f"{at}.id")
                seen.add(qid)
                items.append(_squad_item(qid, title, context, question, [x["text"] for x in answers]))
    return items


def _squad_item(qid: str, title: str, context: str, question: str, answers: Sequence[str]) -> GenItem:
    return GenItem(id=f"squad/{qid}", task="squad", category="squad", prompt=squad_prompt(title, context, question),
                   answers=tuple(dict.fromkeys(answers)), stop=SQUAD_STOP)


# ------------------------------------------------------------------------------------------------------- entries

_LOADERS = {"gsm8k": _load_gsm8k, "mmlu": _load_mmlu, "arc_challenge": _load_arc, "squad": _load_squad}


def load_task(name: str, path: str | Path, *, shots: int | None = None) -> list[MCItem] | list[GenItem]:
    """All evaluation items of a standard task from its local file or folder (see the module docstring).

    `shots=None` takes the task's default (gsm8k 5, mmlu 5, arc_challenge 0, squad 0)."""
    if name not in _LOADERS:
        raise CtxrelError(f"unknown standard task {name!r}; choose from {', '.join(STANDARD_TASKS)}")
    return _LOADERS[name](path, _check_shots(name, shots))


# ----------------------------------------------------------------------------------------------------- HF hub

HUB = {"mmlu": ("cais/mmlu", "all"), "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
       "gsm8k": ("openai/gsm8k", "main"), "squad": ("rajpurkar/squad", None)}


def items_from_hub_rows(name: str, test: Sequence[dict], shots_from: Sequence[dict], shots: int) -> list:
    """Items from rows in the hub datasets' schemas (those lm-eval reads), with the first `shots` rows of
    `shots_from` as the few-shot examples: mmlu test/dev (grouped by `subject`), arc_challenge test/train,
    gsm8k test/train, squad validation."""
    if name == "mmlu":
        by_subject: dict[str, list] = defaultdict(list)
        for r in test:
            by_subject[r["subject"]].append((r["question"], tuple(r["choices"]), int(r["answer"])))
        dev: dict[str, list] = defaultdict(list)
        for r in shots_from:
            dev[r["subject"]].append((mmlu_text(r["question"], r["choices"]), MMLU_LETTERS[int(r["answer"])]))
        return [it for subject in sorted(by_subject)
                for it in _mmlu_items(subject, fewshot_prefix(dev[subject][:shots], mmlu_description(subject)),
                                      by_subject[subject])]
    if name == "arc_challenge":
        def parts(r):
            labels = list(r["choices"]["label"])
            return r["question"], tuple(r["choices"]["text"]), labels.index(r["answerKey"])
        prefix = fewshot_prefix([(qa_text(q), c[g]) for q, c, g in map(parts, shots_from[:shots])])
        return [_arc_item(str(r["id"]), prefix, *parts(r)) for r in test]
    if name == "gsm8k":
        return _gsm8k_items([(r["question"], r["answer"]) for r in test],
                            [(r["question"], r["answer"]) for r in shots_from[:shots]])
    if name == "squad":
        return [_squad_item(r["id"], r["title"], r["context"], r["question"], r["answers"]["text"]) for r in test]
    raise CtxrelError(f"unknown standard task {name!r}; choose from {', '.join(STANDARD_TASKS)}")


def load_task_hub(name: str, *, shots: int | None = None) -> list[MCItem] | list[GenItem]:
    """A standard task read from the HF hub with `datasets` (the same datasets lm-eval reads)."""
    if name not in HUB:
        raise CtxrelError(f"unknown standard task {name!r}; choose from {', '.join(STANDARD_TASKS)}")
    k = _check_shots(name, shots)
    if name == "squad" and k:
        raise CtxrelError(f"squad is 0-shot (as lm-eval's squadv2); got shots={k}")
    import os

    local = (f"pass --benchmark {name}=PATH (eval.standard: [{name}=PATH]) or set CTXREL_DATA to a folder holding "
             f"{name}/")
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        raise CtxrelError(f"standard task {name!r}: no local data given and the HF hub is off (HF_HUB_OFFLINE / "
                          f"HF_DATASETS_OFFLINE); {local}")
    try:
        import datasets
    except ImportError:
        raise CtxrelError(f"standard task {name!r}: no local data given and the `datasets` library is missing; "
                          f"pass --benchmark {name}=PATH, set CTXREL_DATA, or pip install 'ctxrel[train]'") from None
    repo, config = HUB[name]
    test_split, shot_split = {"mmlu": ("test", "dev"), "squad": ("validation", None)}.get(name, ("test", "train"))
    try:
        test = datasets.load_dataset(repo, config, split=test_split)
        shot_rows = datasets.load_dataset(repo, config, split=shot_split) if k else []
    except Exception as e:  # offline, unknown repo, ...: datasets raises many types
        raise CtxrelError(f"standard task {name!r}: could not read {repo} from the HF hub ({type(e).__name__}: "
                          f"{str(e)[:200]}); offline, {local}") from None
    return items_from_hub_rows(name, list(test), list(shot_rows), k)


def stratified_limit(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """A seeded subset of `limit` items, balanced over categories.

    Each category is shuffled with its own seeded RNG and the categories are visited round robin (in a seeded
    order), so every category gets limit/#categories items (more where small ones run out), and a smaller limit
    is always a prefix of a larger one with the same seed: the same items at every checkpoint. `limit=None`, or a
    limit of at least len(items), returns every item (None: in the original order). The round robin is
    `core.sampling`'s, shared with the conflict benchmarks' `select_items`; the seeding is this sampler's own and
    stays: standard-task run directories guard their items by `items_sha256`, so `select_items`' seeding here
    would refuse every one of them on resume."""
    if limit is None:
        return list(items)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise CtxrelError(f"limit must be a whole number >= 1 (or None for all items), got {limit!r}")
    groups = by_category(items)
    order = sorted(groups)
    random.Random(f"{seed}:categories").shuffle(order)
    for cat in order:
        random.Random(f"{seed}:{cat}").shuffle(groups[cat])
    return round_robin([groups[cat] for cat in order], limit)
