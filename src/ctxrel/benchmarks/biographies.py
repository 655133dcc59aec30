"""Built-in `biographies` benchmark: short biographies with the person swapped for someone else.

Each row of `facts/biographies.csv` (columns `person,gender,category,aliases,bio,questions`) is a 2-4 sentence
biography written for ctxrel from general knowledge, with one or two questions whose answer is the person ("Who
wrote Hamlet?"). `aliases` (`;`-separated) are other accepted answers for the real person; leave it empty when
the surname alone would be ambiguous (Marie and Pierre Curie). Every biography is rewritten by the entity
substitution engine (`ctxrel.core.entity_swap`) with `SUBSTITUTES_PER_PERSON` substitutes of the same gender
(real people and invented names, so pronouns still fit), and each (substitute, question) pair is one conflict
item: the context says the substitute did it, the model may remember the real person.

Rules for the table, all checked by `tests/test_biographies.py`: a question never names the person; a bio starts
with the full name; after substitution no token of the real name may remain except as a protected other entity
(the town of Vinci, the city of Washington, Pierre Curie in Marie Curie's bio) and no lower-case form of it.

`build_report()` gives the leak and over-replacement counts over all items (target 0 and 0);
`python -m ctxrel.benchmarks.biographies` prints it. Bump `BIOGRAPHIES_VERSION` when the table, the pools or the
engine's output change.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ctxrel.benchmarks.facts import fact_rows
from ctxrel.benchmarks.schema import ConflictItem, validate_item
from ctxrel.core.entity_swap import SubstitutionResult, parse_name, substitute
from ctxrel.core.errors import InputError
from ctxrel.core.matching import normalize

BIOGRAPHIES_VERSION = 1
FACTS_FILE = "biographies.csv"
HEADER = ["person", "gender", "category", "aliases", "bio", "questions"]
CATEGORIES = ("science", "art", "literature", "politics", "music", "exploration")
SUBSTITUTES_PER_PERSON = 3

# Substitute pools by gender: real people (from other fields and eras) and invented names. A substitute that
# shares a word with a person's bio, name or questions is skipped for that person.
SUBSTITUTES = {
    "m": ("Julius Caesar", "Johannes Kepler", "Henry Ford", "Ernest Hemingway", "Sigmund Freud",
          "Frederick Douglass", "Tomas Verhoeven", "Anton Reyes", "Oskar Lindqvist", "Matteo Ferrante",
          "Daniel Okafor", "Henrik Dahl", "Elias Brandt"),
    "f": ("Florence Nightingale", "Rosa Parks", "Amelia Earhart", "Harriet Tubman", "Emily Dickinson",
          "Ilse Marten", "Clara Voss", "Lena Okafor", "Sofia Brandt"),
}
INVENTED = {"Tomas Verhoeven", "Anton Reyes", "Oskar Lindqvist", "Matteo Ferrante", "Daniel Okafor",
            "Henrik Dahl", "Elias Brandt", "Ilse Marten", "Clara Voss", "Lena Okafor", "Sofia Brandt"}


@dataclass(frozen=True)
class Biography:
    person: str
    gender: str  # m | f: picks the substitute pool
    category: str
    aliases: tuple[str, ...]
    bio: str
    questions: tuple[str, ...]
    line: int = 0


def load_biographies() -> list[Biography]:
    """Read `facts/biographies.csv` shipped inside the package, checking each row's shape."""
    rows = []
    for path, line, row in fact_rows(FACTS_FILE, HEADER):
        person, gender, category, aliases, bio, questions = (c.strip() for c in row)
        if gender not in SUBSTITUTES:
            raise InputError(f"gender must be one of {sorted(SUBSTITUTES)}", path=path, line=line, key="gender")
        if category not in CATEGORIES:
            raise InputError(f"category must be one of {CATEGORIES}", path=path, line=line, key="category")
        if not bio.startswith(person):
            raise InputError("the bio must start with the person's full name", path=path, line=line, key="bio")
        qs = tuple(q.strip() for q in questions.split("|") if q.strip())
        if not qs:
            raise InputError("no question", path=path, line=line, key="questions")
        rows.append(Biography(person, gender, category, tuple(a.strip() for a in aliases.split(";") if a.strip()),
                              bio, qs, line))
    return rows


def _words(*texts: str) -> set[str]:
    return {w for t in texts for w in normalize(t).split()}


def substitutes_for(bio: Biography, index: int) -> list[str]:
    """`SUBSTITUTES_PER_PERSON` names from the person's pool, rotating with `index`, sharing no word with the
    bio, the questions or the person's name (so the context answer appears only where the engine put it)."""
    pool = SUBSTITUTES[bio.gender]
    taken = _words(bio.person, bio.bio, *bio.questions, *bio.aliases)
    picked = []
    for k in range(len(pool)):
        name = pool[(index * SUBSTITUTES_PER_PERSON + k) % len(pool)]
        if not _words(name) & taken:
            picked.append(name)
        if len(picked) == SUBSTITUTES_PER_PERSON:
            break
    return picked


def _slug(text: str) -> str:
    return normalize(text).replace(" ", "_")


def _generate() -> list[tuple[ConflictItem, SubstitutionResult]]:
    out = []
    for index, bio in enumerate(load_biographies()):
        for sub in substitutes_for(bio, index):
            result = substitute(bio.bio, bio.person, sub)
            sub_surname = parse_name(sub).surname
            for qn, question in enumerate(bio.questions, 1):
                item = ConflictItem(
                    id=f"biographies/{_slug(bio.person)}/{_slug(sub)}/q{qn}",
                    benchmark="biographies",
                    category=bio.category,
                    context=result.text,
                    question=question,
                    context_answer=sub,
                    parametric_answer=bio.person,
                    context_aliases=(sub_surname,) if sub_surname != sub else (),
                    parametric_aliases=bio.aliases,
                    source=f"ctxrel:{FACTS_FILE}:{bio.line}",
                    meta={"person": bio.person, "substitute": sub, "version": BIOGRAPHIES_VERSION,
                          "substitute_kind": "invented" if sub in INVENTED else "real",
                          "replacements": len(result.replacements),
                          "protected": [f.text for f in result.leak_report if f.status == "protected"]},
                )
                validate_item(item, path=f"ctxrel/benchmarks/facts/{FACTS_FILE}", line=bio.line)
                out.append((item, result))
    return out


def build_biographies() -> list[ConflictItem]:
    """Biography conflicts: the context credits a substitute with the real person's work or deeds.

    One item per (person, substitute, question); `category` is the person's field. Deterministic.
    """
    return [item for item, _ in _generate()]


def build_report() -> dict:
    """Counts over all generated items: the leak and over-replacement totals must both be 0."""
    pairs = _generate()
    results = {(i.meta["person"], i.meta["substitute"]): r for i, r in pairs}
    leaks = [(p, s, f.text, f.reason) for (p, s), r in results.items() for f in r.leak_report if f.status == "leak"]
    common = [(p, s, f.text) for (p, s), r in results.items() for f in r.leak_report if f.status == "common_word"]
    over = [(p, s, o.original, o.reason) for (p, s), r in results.items() for o in r.over_replacements]
    return {
        "version": BIOGRAPHIES_VERSION,
        "people": len({p for p, _ in results}),
        "substitutes": len({s for _, s in results}),
        "substitutions": len(results),
        "items": len(pairs),
        "categories": {c: sum(i.category == c for i, _ in pairs) for c in CATEGORIES},
        "replacements": sum(len(r.replacements) for r in results.values()),
        "protected_mentions": sum(f.status == "protected" for r in results.values() for f in r.leak_report),
        "leaks": len(leaks),
        "common_words": len(common),
        "over_replacements": len(over),
        "leak_details": leaks + common,
        "over_replacement_details": over,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m ctxrel.benchmarks.biographies [--json]`: print the build report; exit 1 unless 0 and 0."""
    import json

    report = build_report()
    if argv and "--json" in argv:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"biographies v{report['version']}: {report['items']} items from {report['people']} people x "
              f"{report['substitutes']} substitutes ({report['substitutions']} substituted bios); "
              f"{report['replacements']} replacements, {report['protected_mentions']} protected mentions kept")
        print(f"leaks: {report['leaks']}  lower-case common words: {report['common_words']}  "
              f"over-replacements: {report['over_replacements']}")
        for d in report["leak_details"] + report["over_replacement_details"]:
            print("  ", *d)
    return 0 if report["leaks"] == report["over_replacements"] == report["common_words"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
