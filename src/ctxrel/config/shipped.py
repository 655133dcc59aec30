"""Shipped presets: YAML files under ctxrel/configs/, one preset system for every verb.

A verb's presets live in its folder: `configs/synth/*.yaml` for `ctxrel synth`, `configs/theory/*.yaml` for
`ctxrel theory`, `configs/<verb>/` for any other verb, and the study presets (`quickstart`, `paper/...`) at the
top. A preset's full name is its path under configs/ without `.yaml` (`quickstart`, `synth/quick`,
`theory/prop1`); inside its verb the folder may be left out (`ctxrel synth --preset quick`).

Any config file, shipped or not, may name `base: OTHER` (a preset of the same verb, or a YAML path relative to
the file): its keys start from OTHER's and override them, nested sections merged key by key, so a variant is its
base plus the few keys that differ. `read_source` is what `config.load_config` reads a source with: a file, a
preset name, or a run directory (its config.yaml). Standard library and PyYAML only: `ctxrel presets` is quick. (`ctxrel presets show` resolves through
`flags.resolved_yaml`, above the config loader.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ctxrel.core.errors import CtxrelError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
# verbs whose presets have their own folder (every other folder under configs/ holds study presets: paper/)
VERB_DIRS = {"synth": "synth", "theory": "theory", "eval": "eval", "curate": "curate", "report": "report"}


def verb_dir(verb: str | None) -> str:
    """The folder under configs/ of `verb`'s presets ('' = the top: study and train)."""
    return VERB_DIRS.get((verb or "study").split()[0], "")


def names(verb: str | None = None) -> list[str]:
    """Full names of the shipped presets of `verb` (None = every verb), sorted."""
    out = []
    for p in sorted(PRESETS_DIR.rglob("*.yaml")):
        name = p.relative_to(PRESETS_DIR).with_suffix("").as_posix()
        if verb is None or preset_verb(name) == verb_dir(verb):
            out.append(name)
    return out


def preset_verb(name: str) -> str:
    """The verb folder a full preset name belongs to ('' = study)."""
    head = name.split("/", 1)[0]
    return head if "/" in name and head in VERB_DIRS.values() else ""


def verb_of(name: str) -> str:
    """The verb that runs a full preset name (study for the top-level ones)."""
    return preset_verb(name) or "study"


def short(name: str) -> str:
    """The name inside its verb: `synth/quick` -> `quick`; study names are already short."""
    folder = preset_verb(name)
    return name[len(folder) + 1:] if folder else name


def preset_file(name: str, verb: str | None) -> Path | None:
    """The shipped file of preset `name` for `verb` (its short or full name), or None."""
    folder = verb_dir(verb)
    for candidate in ([f"{folder}/{name}", name] if folder else [name]):
        path = PRESETS_DIR / f"{candidate}.yaml"
        if path.is_file() and preset_verb(candidate) == folder:
            return path
    return None


def summary(path: Path) -> str:
    """The first sentence of a preset's header comment (what it is for)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith(("Run:", "Override:", "ctxrel ")):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines).removeprefix(f"{path.stem}:").strip()
    text = text.split(". ")[0].split(": ")[0].split(" -- ")[-1 if text.startswith("the study's setup") else 0]
    return text.rstrip(".")


def header(path: Path) -> str:
    """The comment lines at the top of a preset file (what it is, how to run it)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return "\n".join(out)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def locate(source: str | Path, verb: str | None) -> Path:
    """A source's file: a YAML file, a run directory's config.yaml, or a shipped preset of `verb`."""
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "config.yaml").is_file():
            return p / "config.yaml"
        raise CtxrelError(f"config {source}: a directory without config.yaml (not a run directory)")
    shipped = preset_file(str(source), verb)
    if shipped is not None:
        return shipped
    what = verb or "study"
    choices = ", ".join(short(n) for n in names(what)) or "none shipped"
    raise CtxrelError(f"unknown {what} preset {str(source)!r}; choose one of {choices} (or give a YAML file: "
                      f"{str(source)!r} is no such file, and not a shipped preset)")


def read_source(source: str | Path, verb: str | None = None, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of a source (file, preset name or run directory) as nested dicts, its `base:` chain merged."""
    path = locate(source, verb)
    key = str(path.resolve())
    if key in _seen:
        raise CtxrelError(f"{path}: `base` chain loops ({' -> '.join(Path(s).stem for s in _seen + (key,))})")
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise CtxrelError(f"{path}: `base` must name a preset or a YAML file, got {base!r}")
    relative = path.parent / base
    parent = relative if relative.suffix in (".yaml", ".yml") and relative.is_file() else base
    return _merge(read_source(parent, verb, _seen + (key,)), data)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (or nothing); one sentence naming the file otherwise."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CtxrelError(f"{p}: not a text {what} (byte {e.start} is not UTF-8); restore it or delete it") from None
    except OSError as e:
        raise CtxrelError(f"{p}: cannot read the {what} ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:200]
        raise CtxrelError(f"{p}: invalid YAML ({first})") from None
    except RecursionError:
        raise CtxrelError(f"{p}: YAML nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CtxrelError(f"{p}: expected a mapping of config keys, found {type(data).__name__}")
    return data
