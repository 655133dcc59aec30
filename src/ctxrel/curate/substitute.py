"""`ctxrel curate substitute`: the command-line face of the entity substitution engine (`ctxrel.core.entity_swap`,
pure, used by the built-in `biographies` benchmark and by `contexts` below this package): read a text, rename one
person, write the text and print the leak and over-replacement report."""

from __future__ import annotations

import json
import sys

from ctxrel.core.entity_swap import SubstitutionResult, substitute
from ctxrel.core.errors import CtxrelError

PARSER = dict(help="rename a person everywhere in a text, with a leak and over-replacement report",
              description="Rename every mention of --entity to --with (full name, surname, given name, possessives, "
                          "case variants, derived words) at word boundaries, keeping other entities that share a "
                          "token (a place, a relative). Prints the leak and over-replacement report to stderr and "
                          "exits 1 when leaks remain.")


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CtxrelError(f"--text {path}: cannot read it as UTF-8 text: {e}") from None


def _check_outputs(args) -> None:
    """--out and --report never overwrite the input text or each other."""
    import os

    named = [(what, p) for what, p in (("--text", args.text), ("--out", args.out), ("--report", args.report))
             if p not in (None, "-")]
    for what, p in named:
        if not p.strip():
            raise CtxrelError(f"{what} is empty; name a file (or - for stdin/stdout)")
    for i, (w1, p1) in enumerate(named):
        for w2, p2 in named[i + 1:]:
            same = os.path.abspath(p1) == os.path.abspath(p2) or (
                os.path.exists(p1) and os.path.exists(p2) and os.path.samefile(p1, p2))
            if same:
                raise CtxrelError(f"{w2} {p2} is the same file as {w1} {p1}; the output would overwrite it")


def _write(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CtxrelError(f"{what} {path}: cannot write it ({e})") from None


def format_report(result: SubstitutionResult) -> str:
    """Human-readable leak and over-replacement report (what the CLI prints to stderr)."""
    s = result.summary()
    lines = [f"substitute: {s['replacements']} replacements, {s['leaks']} leaks, {s['protected']} protected, "
             f"{s['common_words']} lower-case common words, {s['over_replacements']} over-replacements"]
    for f in result.leak_report:
        lines.append(f"  {f.status:<11} {f.text!r} at {f.start}-{f.end}: {f.reason}")
    for o in result.over_replacements:
        lines.append(f"  over-replaced {o.original!r} at {o.start}-{o.end}: {o.reason}")
    return "\n".join(lines)


def run_substitute(args) -> int:
    """`ctxrel curate substitute`: 0 when no leak remains, 1 otherwise."""
    from ctxrel.config.flags import from_args

    args = from_args(args)
    if not args.entity.strip() or not args.replacement.strip():
        raise CtxrelError("--entity and --with must both be non-empty names")
    _check_outputs(args)
    result = substitute(_read(args.text), args.entity, args.replacement, protect=args.protect)
    if args.out == "-":
        sys.stdout.write(result.text)
    else:
        _write(args.out, result.text, "--out")
    if args.report:
        _write(args.report, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", "--report")
    print(format_report(result), file=sys.stderr)
    return 1 if result.leaks else 0
