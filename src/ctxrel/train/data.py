"""Instruction data -> token ids with response-only labels.

Sources: the built-in C / C+S / S mixture (`source: mixture`), a local JSON / JSONL file (optionally .gz), or a
Hugging Face dataset id (needs the `datasets` package and a reachable hub or cache). Record formats:

* alpaca  - `instruction`, `input` (may be empty), `output`            (tatsu-lab/alpaca)
* chat    - `messages`: [{role, content}, ...] with user/assistant turns (TULU v2, UltraChat)
* squad   - `context`, `question`, `answers` {text: [...]} or `answer` (rajpurkar/squad): the context and question
            become the prompt, the first answer the response
* mixture - `context`, `question`, `answer` (the built-in mixture): rendered with the same prompt body as the
            conflict benchmarks, so training and evaluation read alike

Templates: alpaca (the Stanford preamble), tulu (<|user|>/<|assistant|> with EOS after each reply), chat (the
tokenizer's chat template). Loss is on assistant text only (and the EOS / end-of-turn that closes it): every
other label is -100. Examples longer than `max_length` are cut at the end; the cut ones are counted, and an
example left with no response token is dropped and counted.
"""

from __future__ import annotations

import gzip
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ctxrel.core import strict_json
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.prompts import ALPACA_NO_INPUT, ALPACA_WITH_INPUT, DEFAULT_BODY, NO_CONTEXT_BODY

IGNORE = -100  # label of a token that carries no loss


@dataclass
class Example:
    """One training example before tokenisation: conversation turns, plus the Alpaca fields when the record
    has them (so the alpaca template can render instruction and input separately)."""

    messages: list[dict[str, str]]
    alpaca: tuple[str, str] | None = None  # (instruction, input)
    kind: str = ""  # c / cs / s for the built-in mixture, else ""
    source: str = ""  # file:line or dataset:index, for error messages


@dataclass
class Tokenized:
    input_ids: list[list[int]]
    labels: list[list[int]]
    kinds: list[str]
    stats: dict[str, int] = field(default_factory=dict)


# -- reading records ----------------------------------------------------------------------------------------

def read_file(path: Path) -> list[tuple[dict[str, Any], str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if stem.endswith(".jsonl"):
                out = []
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            out.append((strict_json.loads(line), f"{path}:{n}"))
                        except ValueError as e:
                            raise InputError(f"invalid JSON ({e})", path=str(path), line=n) from None
                return out
            data = strict_json.loads(f.read())
    except (OSError, EOFError) as e:
        raise CtxrelError(f"data.source {path}: cannot read ({e})") from None
    except ValueError as e:
        raise InputError(f"invalid JSON ({e})", path=str(path)) from None
    if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError("expected a JSON list of records (or an object holding one list)", path=str(path))
        data = lists[0]
    if not isinstance(data, list):
        raise InputError("expected a JSON list of records", path=str(path))
    return [(r, f"{path}:record {i}") for i, r in enumerate(data)]


def read_hub(name: str, split: str) -> list[tuple[dict[str, Any], str]]:
    try:
        import datasets
    except ImportError:
        raise CtxrelError(f"data.source {name}: not a local file, and loading a hub dataset needs the `datasets` "
                          "package (pip install datasets); or pass a local .json/.jsonl file") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown id, unknown split: all say the same to the user
        raise CtxrelError(f"data.source {name}: could not load split {split!r} from the hub or its cache "
                          f"({type(e).__name__}: {str(e)[:200]}); offline? pass a local .json/.jsonl file") from None
    return [(dict(r), f"{name}[{split}]:{i}") for i, r in enumerate(ds)]


def _where(where: str) -> dict[str, Any]:
    """`InputError` location of a record: "file:12" (a JSON Lines line) -> path and line; anything else (a JSON
    list's "file:record 3", a hub "name[split]:7") is the path as it is."""
    path, _, line = where.rpartition(":")
    return dict(path=path, line=int(line)) if line.isdigit() and path else dict(path=where)


def sniff_format(record: Any, where: str = "data.source") -> str:
    """The format of a data file, from the keys of its first record (`where`: that record's location)."""
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object per record, got {_type_name(record)}; set data.format only "
                         "for object records", **_where(where))
    if "messages" in record:
        return "chat"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "question" in record and "answer" in record and "answers" not in record and "kind" in record:
        return "mixture"
    if "context" in record and "question" in record and ("answers" in record or "answer" in record):
        return "squad"
    raise InputError(f"cannot tell the format of a record with keys {sorted(record)}; expected alpaca "
                     "(instruction, input, output), chat (messages) or squad (context, question, answers); "
                     "set data.format", **_where(where))


def _type_name(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _need(record: dict, keys: tuple[str, ...], where: str) -> None:
    for k in keys:
        if not isinstance(record.get(k), str):
            raise InputError(f"field {k!r} must be a string, got {record.get(k)!r:.80}", key=k, **_where(where))


def to_example(record: dict[str, Any], fmt: str, where: str) -> Example:
    """One record in format `fmt` -> an Example; malformed records raise InputError naming file, line, key."""
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {_type_name(record)}", **_where(where))
    if fmt == "alpaca":
        _need(record, ("instruction", "output"), where)
        inp = record.get("input") or ""
        if not isinstance(inp, str):
            _need(record, ("input",), where)
        user = record["instruction"] + (f"\n\n{inp}" if inp else "")
        return Example([{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}],
                       alpaca=(record["instruction"], inp), source=where)
    if fmt == "chat":
        msgs = record.get("messages")
        ok = isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs)
        if not ok:
            raise InputError("'messages' must be a non-empty list of {role, content} strings", path=where,
                             key="messages")
        if not any(m["role"] == "assistant" for m in msgs):
            raise InputError("'messages' has no assistant turn to learn from", path=where, key="messages")
        return Example([{"role": m["role"], "content": m["content"]} for m in msgs], source=where)
    if fmt == "squad":
        _need(record, ("context", "question"), where)
        answers = record.get("answers")
        if isinstance(answers, dict):
            texts = answers.get("text") or []
        else:
            texts = [record.get("answer")] if record.get("answer") is not None else []
        if not texts or not isinstance(texts[0], str):
            raise InputError("no answer text (expected answers.text[0] or answer)", path=where, key="answers")
        return _qa_example(record["context"], record["question"], texts[0], "", where)
    if fmt == "mixture":
        _need(record, ("question", "answer"), where)
        return _qa_example(record.get("context") or "", record["question"], record["answer"],
                           record.get("kind", ""), where)
    raise CtxrelError(f"unknown data.format {fmt!r}")


def _qa_example(context: str, question: str, answer: str, kind: str, where: str) -> Example:
    """A question (with or without context) in the same wording as the conflict benchmarks' prompts."""
    body = DEFAULT_BODY.format(context=context, question=question) if context else \
        NO_CONTEXT_BODY.format(question=question)
    return Example([{"role": "user", "content": body}, {"role": "assistant", "content": answer}],
                   alpaca=(question, context), kind=kind, source=where)


def source_path(source: str) -> Path:
    """data.source as a local path: `~` and environment variables expanded, so that a shipped preset can name
    `$CTXREL_DATA/alpaca/alpaca_data.json.gz`; a variable that is not set is an error, not a literal `$`."""
    for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", source):
        if name not in os.environ:
            raise CtxrelError(f"data.source {source}: ${name} is not set (export {name}=FOLDER, or give the path)")
    return Path(os.path.expandvars(source)).expanduser()


def local_source(source: str) -> Path | None:
    """The file a non-mixture data.source names, or None for a hub dataset id. A source that looks like a path
    (`./`, `/`, `~`, `$VAR`, a .json/.jsonl/.gz name) but does not exist is an error, raised before anything else
    (a study checks it before its run directory is touched)."""
    if not source.strip():
        raise CtxrelError("data.source is empty: name `mixture`, a local .json/.jsonl(.gz) file or an HF dataset id")
    path = source_path(source)
    if path.is_dir():
        raise CtxrelError(f"data.source {source}: is a directory, not a .json/.jsonl(.gz) file")
    if path.exists():
        return path
    if source.startswith((".", "/", "~", "$")) or source.endswith((".json", ".jsonl", ".gz")):
        raise CtxrelError(f"data.source {source}: no such file")
    return None


def load_examples(data_cfg, *, seed: int = 0) -> list[Example]:
    """The examples a study trains on, in a seeded order (the loop reshuffles per epoch)."""
    if data_cfg.source == "mixture":
        from ctxrel.train.mixture import generate_mixture

        m = data_cfg.mixture
        records = generate_mixture(m.n, m.shares(), seed=seed)
        pairs = [(r, f"mixture:{i}") for i, r in enumerate(records)]
        fmt = "mixture"
    else:
        path = local_source(data_cfg.source)
        pairs = read_file(path) if path else read_hub(data_cfg.source, data_cfg.split)
        if not pairs:
            raise CtxrelError(f"data.source {data_cfg.source}: no records")
        fmt = data_cfg.format if data_cfg.format != "auto" else sniff_format(*pairs[0])
    if data_cfg.limit is not None and data_cfg.limit < len(pairs):
        rng = random.Random(seed)
        pairs = rng.sample(pairs, data_cfg.limit)
    return [to_example(r, fmt, where) for r, where in pairs]


# -- rendering and tokenising --------------------------------------------------------------------------------

def render_segments(ex: Example, template: str, render_chat: Callable | None, eos: str) -> list[tuple[str, bool]]:
    """The example as (text, trainable) segments that concatenate to the full training text."""
    if template == "alpaca":
        turns = [m for m in ex.messages if m["role"] != "system"]
        if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant":
            raise InputError("the alpaca template takes single-turn examples (one user, one assistant message); "
                             "use data.template=tulu or chat for conversations", path=ex.source)
        instruction, inp = ex.alpaca or (turns[0]["content"], "")
        prompt = ALPACA_WITH_INPUT.format(instruction=instruction, input=inp) if inp else \
            ALPACA_NO_INPUT.format(instruction=instruction)
        return [(prompt, False), (turns[1]["content"] + eos, True)]
    if template == "tulu":
        segs: list[tuple[str, bool]] = []
        for m in ex.messages:
            if m["role"] == "assistant":
                segs += [("<|assistant|>\n", False), (m["content"] + eos, True), ("\n", False)]
            else:
                segs.append((f"<|{m['role']}|>\n{m['content']}\n", False))
        return segs
    if template == "chat":
        if render_chat is None:
            raise CtxrelError("data.template chat needs a tokenizer with a chat template; use alpaca or tulu")
        segs, done = [], ""
        for i, m in enumerate(ex.messages):
            if m["role"] != "assistant":
                continue
            prefix = render_chat(ex.messages[:i], add_generation_prompt=True)
            full = render_chat(ex.messages[:i + 1], add_generation_prompt=False)
            if not (prefix.startswith(done) and full.startswith(prefix)):
                raise CtxrelError("the tokenizer's chat template does not render conversations as growing "
                                  "prefixes, so response-only labels cannot be placed; use data.template=tulu")
            segs += [(prefix[len(done):], False), (full[len(prefix):], True)]
            done = full
        return segs
    raise CtxrelError(f"unknown data.template {template!r}")


def tokenize(examples: list[Example], tok, *, template: str, max_length: int) -> Tokenized:
    """Token ids and labels (-100 outside responses). BOS is added once, unless the template text already has it.
    `truncated` counts the kept examples that were cut; `dropped` those left with no response token."""
    def render_chat(msgs, add_generation_prompt):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    has_chat = bool(getattr(tok, "chat_template", None))
    eos = tok.eos_token or ""
    bos = tok.bos_token
    out = Tokenized([], [], [], dict(examples=len(examples), truncated=0, dropped=0, tokens=0, label_tokens=0))
    for ex in examples:
        segs = render_segments(ex, template, render_chat if has_chat else None, eos if template != "chat" else "")
        ids, labels = label_segments(segs, tok, bos)
        cut = len(ids) > max_length
        ids, labels = ids[:max_length], labels[:max_length]
        if all(x == IGNORE for x in labels[1:]):
            out.stats["dropped"] += 1
            continue
        out.stats["truncated"] += cut
        out.input_ids.append(ids)
        out.labels.append(labels)
        out.kinds.append(ex.kind)
        out.stats["tokens"] += len(ids)
        out.stats["label_tokens"] += sum(x != IGNORE for x in labels[1:])
    if not out.input_ids:
        raise CtxrelError(f"no training example has a response token within data.max_length={max_length}")
    return out


def label_segments(segs: list[tuple[str, bool]], tok, bos: str | None) -> tuple[list[int], list[int]]:
    """Tokenise the joined text once -- exactly as evaluation tokenises a prompt, which matters for SentencePiece
    tokenizers that add a word-start marker to every separate call -- and label a token when its first character
    lies in a trainable segment (character offsets from the fast tokenizer)."""
    text = "".join(t for t, _ in segs)
    add = not (bos and text.startswith(bos))
    enc = tok(text, add_special_tokens=add, return_offsets_mapping=True)
    trainable = []
    pos = 0
    for t, train in segs:
        if train:
            trainable.append((pos, pos + len(t)))
        pos += len(t)
    ids, labels = list(enc["input_ids"]), []
    for i, (a, b) in zip(ids, enc["offset_mapping"]):
        inside = b > a and any(lo <= a < hi for lo, hi in trainable)
        labels.append(i if inside else IGNORE)
    eos_id = tok.eos_token_id
    if add and ids and ids[-1] == eos_id and labels[-1] == IGNORE and len(ids) > 1:
        ids, labels = ids[:-1], labels[:-1]  # a tokenizer that appends EOS as a special token: only replies end so
    return ids, labels


def collate(ids: list[list[int]], labels: list[list[int]], pad_id: int):
    """Right-padded (B, T) tensors: input_ids, attention_mask, labels (padding labelled -100). Right padding
    keeps real tokens from ever attending to padding, so an example's loss does not depend on its batch."""
    import torch

    width = max(len(x) for x in ids)
    inp = torch.full((len(ids), width), pad_id, dtype=torch.long)
    lab = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(ids, labels)):
        inp[i, :len(x)] = torch.tensor(x)
        lab[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return inp, mask, lab
