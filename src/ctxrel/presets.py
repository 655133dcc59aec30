"""Shipped presets: YAML files under ctxrel/configs/, one preset system for every verb.

A verb's presets live in its folder: `configs/synth/*.yaml` for `ctxrel synth`, `configs/theory/*.yaml` for
`ctxrel theory`, `configs/<verb>/` for any other verb, and the study presets (`quickstart`, `paper/...`) at the
top. A preset's full name is its path under configs/ without `.yaml` (`quickstart`, `synth/quick`,
`theory/prop1`); inside its verb the folder may be left out (`ctxrel synth --preset quick`).

Any config file, shipped or not, may name `base: OTHER` (a preset of the same verb, or a YAML path relative to
the file): its keys start from OTHER's and override them, nested sections merged key by key, so a variant is its
base plus the few keys that differ. `read_source` is what `config.load_config` reads a source with: a file, a
preset name, or a run directory (its config.yaml). Standard library and PyYAML only: `ctxrel presets` is quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxrel.errors import CtxrelError

PRESETS_DIR = Path(__file__).resolve().parent / "configs"
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
    from ctxrel.config import read_yaml_mapping

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


def resolved_yaml(name: str) -> str:
    """`ctxrel presets show NAME`: the preset's header, then every key of its verb's config with its value
    (base chain merged, defaults filled in): a file `--config` reads back to the same config."""
    import dataclasses

    import yaml

    from ctxrel.config import config_class, load_config

    verb = verb_of(name)
    path = preset_file(short(name), verb)
    if path is None:
        raise CtxrelError(f"unknown preset {name!r}; `ctxrel presets` lists them ({', '.join(names())})")
    cfg = load_config(config_class(verb), path, verb=verb)
    body = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = [header(path), f"# resolved from preset {name} (every key, defaults filled in); run it with",
             f"#   ctxrel {verb} --config THIS_FILE key=value", body]
    return "\n".join(x for x in lines if x)
