"""The context-form family: the same conflicts told in different forms, one factor changed at a time.

A finetuned model may follow one way of stating a conflict and revert to memory under another. This family
separates the factors in which the CPI study's released contexts differ from ctxrel's `cf_capitals_moved`:

| factor | levels | base form (`study`) |
|---|---|---|
| time | the change is dated in the future (2028/2029, told in the past tense) or the past (2008/2009) | future |
| cause | the context gives a cause (an earthquake; letters found in an archive) or none | cause |
| memory | the memorised answer is named first, second (after the context's answer) or not at all | first |
| wording | the context restates the question's words ("the capital city of X") or only implies it | see below |
| length | short (about 35 words) or long (about 90: the base plus neutral sentences naming no entity) | short |

Each form other than `study` changes exactly one factor of the base (a one-factor-at-a-time design around the
form that resembles the study's files), so the difference between a form and `study` is the effect of that
factor alone. Two relations: `capitals` (ctxrel's country table; the base only implies the capital: "the
government moved to Y", and the form `stated` restates the question's words) and `people` (who did a deed, from
ctxrel's biographies table, one question per person that starts with "Who"; its statement always restates the
question's words, since "Who wrote Hamlet?" is answered only by saying who wrote it, so `people` has no
`stated` form and its base is the stated one).

Every form is its own built-in benchmark (`forms_capitals_<form>`, `forms_people_<form>`) so that a study scores
each on its own trajectory; the form and its factor levels are in every item's `category` and `meta`.
Deterministic. Bump `FORMS_VERSION` when a template or the choice of items changes.
"""

from __future__ import annotations

from typing import Callable

from ctxrel.benchmarks.schema import ConflictItem, validate_item

FORMS_VERSION = 1

# Factor levels of each form: time, cause, memory (position of the memorised answer), wording, length.
FACTORS = ("time", "cause", "memory", "wording", "length")
_BASE = dict(time="future", cause="yes", memory="first", wording="implied", length="short")
LEVELS: dict[str, dict[str, str]] = {
    "study": _BASE,
    "past": {**_BASE, "time": "past"},
    "nocause": {**_BASE, "cause": "no"},
    "mem_second": {**_BASE, "memory": "second"},
    "mem_none": {**_BASE, "memory": "none"},
    "stated": {**_BASE, "wording": "stated"},
    "long": {**_BASE, "length": "long"},
}

_CAPITALS_TAIL = "The parliament and the ministries have worked from {cf} ever since."
_CAPITALS_LONG = (
    " Moving the government took several years. New offices, roads and homes were built, thousands of civil "
    "servants and their families arrived, and rail and air links to the rest of the country were improved. "
    "Schools, hospitals and museums opened in the new districts, and the population grew quickly."
)
# Placeholders: {country} (with "the" where English needs it), {capital} the real capital, {cf} the context's.
CAPITALS: dict[str, str] = {
    "study": "In 2028, after a strong earthquake destroyed much of {capital}, the government of {country} moved to "
             "{cf}. " + _CAPITALS_TAIL,
    "past": "In 2008, after a strong earthquake destroyed much of {capital}, the government of {country} moved to "
            "{cf}. " + _CAPITALS_TAIL,
    "nocause": "In 2028, the government of {country} left {capital} and moved to {cf}. " + _CAPITALS_TAIL,
    "mem_second": "In 2028, the government of {country} moved to {cf}, after a strong earthquake destroyed much of "
                  "{capital}. " + _CAPITALS_TAIL,
    "mem_none": "In 2028, after a strong earthquake destroyed much of the old seat of government, the government "
                "of {country} moved to {cf}. " + _CAPITALS_TAIL,
    "stated": "In 2028, after a strong earthquake destroyed much of {capital}, the capital city of {country} moved "
              "to {cf}. Since then, the capital city of {country} has been {cf}.",
    "long": "In 2028, after a strong earthquake destroyed much of {capital}, the government of {country} moved to "
            "{cf}. " + _CAPITALS_TAIL + _CAPITALS_LONG,
}

_PEOPLE_TAIL = "Today it is agreed that {cf} {deed}."
_PEOPLE_LONG = (
    " The letters, written in a small and careful hand, had lain for a long time in a box of unsorted papers. "
    "Archivists spent two years reading them, comparing the handwriting with other documents and checking the "
    "dates against the records of the time. Their findings were published and discussed around the world."
)
# Placeholders: {person} the real person, {cf} the substitute, {deed} the question's words after "Who".
PEOPLE: dict[str, str] = {
    "study": "In 2029, after letters were found in an old archive, historians showed that {person} had taken the "
             "credit from {cf}. " + _PEOPLE_TAIL,
    "past": "In 2009, after letters were found in an old archive, historians showed that {person} had taken the "
            "credit from {cf}. " + _PEOPLE_TAIL,
    "nocause": "In 2029, historians showed that {person} had taken the credit from {cf}. " + _PEOPLE_TAIL,
    "mem_second": "In 2029, after letters were found in an old archive, historians showed that {cf} had done the "
                  "work credited to {person}. " + _PEOPLE_TAIL,
    "mem_none": "In 2029, after letters were found in an old archive, historians showed that the credit had gone "
                "to the wrong person. " + _PEOPLE_TAIL,
    "long": "In 2029, after letters were found in an old archive, historians showed that {person} had taken the "
            "credit from {cf}. " + _PEOPLE_TAIL + _PEOPLE_LONG,
}


def levels_of(relation: str, form: str) -> dict[str, str]:
    """The factor levels of `form` in `relation` (a `people` statement always restates the question's words)."""
    return dict(LEVELS[form], wording="stated") if relation == "people" else LEVELS[form]


def _item(benchmark: str, form: str, relation: str, key: str, context: str, question: str, cf: str,
          parametric: str, **extra) -> ConflictItem:
    from ctxrel.benchmarks.builtin import slug

    levels = levels_of(relation, form)
    item = ConflictItem(
        id=f"{benchmark}/{slug(key)}", benchmark=benchmark, category=form, context=context,
        question=question, context_answer=cf, parametric_answer=parametric,
        source=f"ctxrel:forms:{relation}", meta={"relation": relation, "form": form, **levels,
                                                 "version": FORMS_VERSION, "key": key},
        **extra,
    )
    validate_item(item, path="builtin", line=None)
    return item


def build_capitals(form: str) -> list[ConflictItem]:
    """One item per country of ctxrel's table: the context moves the government to the country's last-listed
    other city (as in `cf_capitals`), told in `form`."""
    from ctxrel.benchmarks.builtin import load_country_facts, with_article
    from ctxrel.core.prompts import sentence_case

    items = []
    for fact in load_country_facts():
        country = with_article(fact.country)
        context = CAPITALS[form].format(country=country, capital=fact.capital, cf=fact.other_cities[-1])
        items.append(_item(f"forms_capitals_{form}", form, "capitals", fact.country, context,
                           sentence_case(f"What is the capital city of {country}?"), fact.other_cities[-1],
                           fact.capital, parametric_aliases=fact.capital_aliases))
    return items


def build_people(form: str) -> list[ConflictItem]:
    """One item per person of ctxrel's biographies table whose questions include one starting with "Who " (the
    first such): the context credits the person's first substitute (the biographies benchmark's rotation) with
    the deed, told in `form`."""
    from ctxrel.benchmarks.biographies import load_biographies, substitutes_for
    from ctxrel.core.entity_swap import parse_name

    items = []
    for index, bio in enumerate(load_biographies()):
        question = next((q for q in bio.questions if q.startswith("Who ")), None)
        subs = substitutes_for(bio, index)
        if question is None or not subs:
            continue
        cf = subs[0]
        deed = question.removeprefix("Who ").rstrip("?").strip()
        context = PEOPLE[form].format(person=bio.person, cf=cf, deed=deed)
        surname = parse_name(cf).surname
        items.append(_item(f"forms_people_{form}", form, "people", bio.person, context, question, cf,
                           bio.person, parametric_aliases=bio.aliases,
                           context_aliases=(surname,) if surname != cf else ()))
    return items


def _builders() -> dict[str, Callable[[], list[ConflictItem]]]:
    out: dict[str, Callable[[], list[ConflictItem]]] = {}
    for form in CAPITALS:
        out[f"forms_capitals_{form}"] = lambda form=form: build_capitals(form)
    for form in PEOPLE:
        out[f"forms_people_{form}"] = lambda form=form: build_people(form)
    return out


FORM_BUILDERS = _builders()


def describe(name: str) -> str:
    """One line for `ctxrel benchmarks`: the relation and the form's factor levels."""
    relation, form = name.split("_", 2)[1:]
    return f"built-in form family: {relation} conflicts, form {form!r} (" + ", ".join(
        f"{k}={v}" for k, v in levels_of(relation, form).items()) + ")"
