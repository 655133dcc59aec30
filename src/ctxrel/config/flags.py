"""CLI flags derived from config dataclasses: no flag table is kept by hand.

Every leaf key of a verb's config becomes a flag named after it (`eval.max_new_tokens` -> `--eval.max-new-tokens`,
`max_length` -> `--max-length`), typed by the field (int, float, str; a list flag is repeatable; a bool gets
`--key` / `--no-key`), with the field's declared choices, its source comment as help and its default. The few
short aliases (`--model`, `--limit`, ...) are declared next to their field with `config.option(flag=...)`.
Flags set the same keys as `KEY=VALUE` and win over them and over `--config`.

Standard library, PyYAML and the config dataclasses only: the verbs' parsers are built without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from typing import Any

from ctxrel.config.settings import VERB_CHECKS, config_class, load_config, option, parse_value  # noqa: F401 (option: re-exported)
from ctxrel.config.shipped import header, names, preset_file, short, verb_of
from ctxrel.core.errors import CtxrelError

DEST = "key:"  # argparse dest prefix of a derived flag: the rest is the dotted config key

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a KEY=VALUE argument (a path like runs/a=b is not one)


@dataclasses.dataclass
class Leaf:
    key: str  # dotted config key
    type: Any  # the field's type hint
    default: Any
    help: str
    meta: dict


def _field_comments(cls) -> dict[str, str]:
    """Field name -> its comment in the class source: the comment lines right above the field plus the comment
    at the end of its line (and that comment's continuation lines, `#` followed by aligned spaces)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string[1:]
    except (tokenize.TokenError, IndentationError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    last = None
    for n, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            text = comments.get(n, stripped[1:])
            if last is not None and text.startswith("  "):  # continues the comment of the field above
                out[last] = f"{out[last]} {text.strip()}".strip()
            else:
                above.append(text.strip())
                last = None
            continue
        m = re.match(r"^    (\w+)\s*:[^=]", line)
        if m and not stripped.startswith(("def ", "class ", "return ")):
            name = m.group(1)
            out[name] = " ".join(above + ([comments[n].strip()] if n in comments else [])).strip()
            last = name if n in comments else None
        else:
            last = None
        above = []
    return out


@functools.lru_cache(maxsize=None)
def _helps(cls) -> dict[str, str]:
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            helps.update({k: v for k, v in _field_comments(klass).items() if v})
    return helps


def leaves(cls, prefix: str = "") -> list[Leaf]:
    """Every leaf key of dataclass `cls` (nested sections flattened to dotted keys), in declaration order."""
    hints = typing.get_type_hints(cls)
    helps = _helps(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            out += leaves(tp, key + ".")
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        meta = dict(f.metadata)
        out.append(Leaf(key, tp, default, meta.get("help") or helps.get(f.name, ""), meta))
    return out


def scalar(tp: Any) -> tuple[Any, bool]:
    """(the scalar type a flag parses, whether the key is a list); (None, False) for a mapping (KEY=VALUE only)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)][:1] or [str]
        origin = typing.get_origin(tp)
    if origin is list:
        if dataclasses.is_dataclass(typing.get_args(tp)[0]):  # a list of sections (study stages): YAML
            return None, False
        return scalar(typing.get_args(tp)[0])[0], True
    if origin is dict or tp is Any:
        return None, False
    return tp, False


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


METAVARS = {int: "N", float: "X"}


def add_flags(parser: argparse.ArgumentParser, cls, *, aliases: bool = True, skip: tuple[str, ...] = ()) -> None:
    """One flag per leaf key of `cls` (plus its declared aliases, unless `aliases` is false: a study's `--mode`
    would be ambiguous), in a group of its own."""
    group = parser.add_argument_group(
        "config keys", "each flag sets the key named after it; KEY=VALUE sets any key the same way (lists as "
                       "[a, b]), and --config FILE or a preset gives the starting values; flags win")
    exclusive: dict[str, Any] = {}
    for leaf in leaves(cls):
        tp, is_list = scalar(leaf.type)
        if leaf.key in skip:
            continue
        text = (leaf.help or "").replace("%", "%%")
        if tp is None:
            group.add_argument(flag_name(leaf.key), dest=DEST + leaf.key, default=None, metavar="YAML",
                               type=functools.partial(_yaml, key=leaf.key),
                               help=f"{text} (YAML; default: {_show(leaf.default)})")
            continue
        names = list(dict.fromkeys([flag_name(leaf.key), *(leaf.meta.get("flags", ()) if aliases else ())]))
        where = group
        if leaf.meta.get("group"):
            if leaf.meta["group"] not in exclusive:
                exclusive[leaf.meta["group"]] = group.add_mutually_exclusive_group()
            where = exclusive[leaf.meta["group"]]
        kwargs: dict[str, Any] = dict(dest=DEST + leaf.key, default=None,
                                      help=f"{text} (default: {_show(leaf.default)})".lstrip())
        if tp is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=tp if tp in (int, float) else str, metavar=METAVARS.get(tp, "VALUE"))
            if leaf.meta.get("choices"):
                kwargs.update(choices=leaf.meta["choices"], metavar=None)
            if is_list:
                kwargs["action"] = "append"
        where.add_argument(*names, **kwargs)


def _yaml(raw: str, key: str) -> Any:

    return parse_value(raw, f"--{key}")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as dotted config keys with typed values."""
    return {name[len(DEST):]: value for name, value in vars(args).items()
            if name.startswith(DEST) and value is not None}


def split(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (plain values, KEY=VALUE overrides)."""
    plain = [x for x in items if not OVERRIDE.match(x)]
    return plain, [x for x in items if OVERRIDE.match(x)]


def add_common(parser: argparse.ArgumentParser, *, config_help: str | None = None) -> None:
    """--config: the source every verb takes."""
    parser.add_argument("--config", metavar="FILE", help=config_help or "YAML config file, a shipped preset "
                        "(`ctxrel presets`) or a run directory; KEY=VALUE and flags override it")


def verb_name(args: argparse.Namespace) -> str:
    """The key of `config.VERBS` the parsed command runs (`curate filter`, `eval`, ...)."""
    return f"{args.verb} {args.curate_verb}" if getattr(args, "curate_verb", None) else args.verb


def from_args(args: argparse.Namespace, verb: str | None = None):
    """The verb's config from its parsed command line, the same path for every verb (`config.load_config`):
    the source (--config, --preset, or the first plain argument of study/train), then KEY=VALUE, then flags.
    Required keys and the verb's own checks (`config.VERB_CHECKS`) run here, before any model loads."""
    import importlib


    verb = verb or verb_name(args)
    plain, overrides = split(list(getattr(args, "args", None) or getattr(args, "overrides", None) or []))
    settings = given(args)
    if verb == "report" and plain:  # the run directories
        settings["runs"], plain = plain, []
    if plain and verb not in ("study", "train"):
        raise CtxrelError(f"argument {plain[0]!r}: expected KEY=VALUE, e.g. {_example(verb)}")
    sources = [s for s in (getattr(args, "config", None), getattr(args, "preset", None)) if s is not None] + plain
    if len(sources) > 1:
        raise CtxrelError(f"ctxrel {verb} takes one config ({', '.join(map(str, sources))} given); set single "
                          "keys with KEY=VALUE")
    cfg = load_config(config_class(verb), sources[0] if sources else None, overrides, settings, verb=verb)
    check_required(cfg, verb)
    if verb in VERB_CHECKS:
        module, name = VERB_CHECKS[verb].split(":")
        getattr(importlib.import_module(module), name)(cfg)
    return cfg


def _example(verb: str) -> str:
    return {"eval": "eval.limit=20", "theory": "lr=10", "synth": "finetune.steps=300"}.get(verb, "limit=100")


def check_required(cfg, verb: str) -> None:
    """Keys declared required (`option(required=True)`) must be set, by flag, KEY=VALUE or the config file."""

    missing = [leaf for leaf in leaves(type(cfg)) if leaf.meta.get("required")
               and _get(cfg, leaf.key) in (None, [], "")]
    if missing:
        flags = [leaf.meta["required"] if isinstance(leaf.meta["required"], str) else
                 (leaf.meta.get("flags") or (flag_name(leaf.key),))[0] for leaf in missing]
        raise CtxrelError(f"ctxrel {verb} needs {', '.join(flags)} (or {', '.join(m.key + '=' for m in missing)} "
                          "in the config)")


def _get(cfg, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def resolved_yaml(name: str) -> str:
    """`ctxrel presets show NAME`: the preset's header, then every key of its verb's config with its value
    (base chain merged, defaults filled in): a file `--config` reads back to the same config."""
    import yaml


    verb = verb_of(name)
    path = preset_file(short(name), verb)
    if path is None:
        raise CtxrelError(f"unknown preset {name!r}; `ctxrel presets` lists them ({', '.join(names())})")
    cfg = load_config(config_class(verb), path, verb=verb)
    body = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = [header(path), f"# resolved from preset {name} (every key, defaults filled in); run it with",
             f"#   ctxrel {verb} --config THIS_FILE key=value", body]
    return "\n".join(x for x in lines if x)
