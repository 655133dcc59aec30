"""A controlled instruction mixture of C, C+S and S examples, generated from fact tables ctxrel maintains.

The study traces context-parametric inversion to the *kind* of finetuning example: context-critical (C, the
target needs the context), non-context-critical (C+S, the context states what the model already knows) and
subject-critical (S, no context, pure recall). To vary that mixture and nothing else, every example here is
generated, deterministically, from one seed:

* **c**: facts about *invented* entities (names built from syllables), stated only in the context, so the
  answer cannot come from memory. The relations mirror the real ones (currency, language, author, painter,
  inventor) plus a few more (founder, founding year, river, height, habitat), and some contexts carry one or
  two distractor sentences about other invented entities;
* **cs**: a real fact from the tables, with a context that states it (and sometimes a distractor sentence
  stating another real fact);
* **ci**: non-context-critical with an *irrelevant* context: a real fact asked with a context that states
  only other real facts -- one about another subject of the same relation (so the context offers an answer of
  the right type that is not the answer) and sometimes one of another relation (possibly about the asked
  subject: "In Saudi Arabia, people pay with the riyal" for a question on its language). The answer must come from
  memory. The synthetic lab (`ctxrel synth`) found this kind, more than contexts that repeat a known fact,
  drives the fall of context reliance late in finetuning;
* **s**: the same kind of real fact as a bare question, with an empty context.

Fact tables (`facts/<relation>.csv`, written by hand for ctxrel from general knowledge; they copy no dataset)
have the columns `subject,answer,aliases`: `subject` as it reads in the middle of an English sentence ("the
United Kingdom", "gold", "the telephone", "The Great Wave off Kanagawa"), `answer` the short answer, `aliases`
other accepted answers separated by `|`, possibly empty. The relation is the file name.

Training facts must stay disjoint from the evaluation facts, or a finetuned model's cf-acc would measure
memorised training data: no relation is about capitals, and no text names a city of the `cf_capitals`
benchmark. `eval_overlap` checks this against the benchmark loaded through ctxrel's own code, and invented
names are drawn so that they never equal a word of those cities or of the fact tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.matching import normalize
from ctxrel.core.prompts import sentence_case

KINDS = ("c", "cs", "ci", "s")
OPTIONAL_KINDS = ("ci",)  # may be left out of the proportions (share 0)
HEADER = ["subject", "answer", "aliases"]
REAL_RELATIONS = ("currency", "language", "chemical_symbol", "author", "painter", "inventor", "animal_class")
CS_DISTRACTOR_RATE = 0.35  # share of cs contexts with one extra real-fact sentence
C_DISTRACTORS = (0, 0, 1, 1, 2)  # drawn uniformly: how many invented distractor sentences a c context gets

# relation -> (statements, questions), read from facts/templates.json (data, beside the fact tables).
# Placeholders: {subject}, {answer}, {a_answer} ("an insect"). Statements state the fact in one sentence; the c kind reuses the real relations' templates, so a C example
# differs from a C+S example only in whether the model can know the fact.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    rel: (tuple(t["statements"]), tuple(t["questions"]))
    for rel, t in json.loads((files("ctxrel.train") / "facts" / "templates.json").read_text("utf-8")).items()}

# c relation -> (subject pattern, answer pattern); each {slot} is filled with a fresh invented value.
INVENTED: dict[str, tuple[str, str]] = {
    "founder": ("the town of {place}", "{person}"),
    "founding_year": ("the town of {place}", "{year}"),
    "river": ("the town of {place}", "the {river} River"),
    "height": ("Mount {peak}", "{metres} metres"),
    "habitat": ("the {creature}", "{island}"),
    "currency": ("the kingdom of {realm}", "{coin}"),
    "language": ("the kingdom of {realm}", "{lang}"),
    "author": ("The {book_noun} of {place}", "{person}"),
    "painter": ("{time_of_day} over {place}", "{person}"),
    "inventor": ("the {device}", "{person}"),
}
# Syllables for invented names ("Velmora", "Ostrik Palun"): clusters only open a word, codas stay soft.
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
CLUSTERS = ("br", "dr", "gr", "kr", "tr", "st", "th")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
CODAS = ("", "", "", "", "", "n", "r", "l", "s")
WORD_LISTS = {"book_noun": ("Chronicles", "Lanterns", "Winters", "Letters", "Bells", "Orchards", "Daughters"),
              "time_of_day": ("Morning", "Evening", "Dusk", "Rain", "Snow", "Moonrise")}


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    answer: str
    aliases: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def load_fact_tables() -> tuple[Fact, ...]:
    """All real facts, in table order (relation by relation, row by row); rows are checked as they are read."""
    facts = []
    for relation in REAL_RELATIONS:
        path = f"ctxrel/train/facts/{relation}.csv"
        reader = csv.reader(io.StringIO((files("ctxrel.train") / "facts" / f"{relation}.csv").read_text("utf-8")))
        if (header := next(reader, None)) != HEADER:
            raise InputError(f"header must be {','.join(HEADER)}, found {header}", path=path, line=1)
        for row in reader:
            if len(row) != len(HEADER) or not row[0].strip() or not row[1].strip():
                raise InputError(f"expected a subject, an answer and aliases, found {row}", path=path,
                                 line=reader.line_num)
            aliases = tuple(a.strip() for a in row[2].split("|") if a.strip())
            facts.append(Fact(relation, row[0].strip(), row[1].strip(), aliases))
    return tuple(facts)


@lru_cache(maxsize=1)
def training_fact_pool() -> tuple[Fact, ...]:
    """The real facts the mixture may teach: every table row that names no entity of a built-in evaluation
    benchmark (a biographies person, real or substituted; the tables name no cf_capitals city at all, tested).
    Teaching "Hamlet was written by William Shakespeare" would train the very memory a biographies conflict
    measures, so those rows (32 of 314 today) are left out of cs, ci and s examples and of counterfactual
    augmentation."""
    pattern = _name_pattern(eval_person_names())
    return tuple(f for f in load_fact_tables()
                 if not any(pattern.search(normalize(text)) for text in (f.subject, f.answer, *f.aliases)))


def training_facts() -> set[tuple[str, str]]:
    """The (subject, relation) pairs the mixture can teach through cs, ci and s examples."""
    return {(f.subject, f.relation) for f in training_fact_pool()}


@lru_cache(maxsize=1)
def eval_person_names() -> tuple[str, ...]:
    """Normalised names of every person the built-in `biographies` benchmark uses (real people, their
    substitutes, every accepted answer and alias), longest first."""
    from ctxrel.benchmarks.registry import load_benchmark

    names = set()
    for item in load_benchmark("biographies").items:
        names.update(item.context_answers + item.parametric_answers)
        names.update(str(item.meta.get(k, "")) for k in ("person", "substitute"))
    return tuple(sorted({normalize(n) for n in names} - {""}, key=lambda n: (-len(n), n)))


def _name_pattern(names: tuple[str, ...]) -> re.Pattern:
    """Whole-word match of any of `names` on normalised text, whose only separator is a single space."""
    return re.compile(r"(?<!\S)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\S)")


@lru_cache(maxsize=1)
def eval_city_names() -> tuple[str, ...]:
    """Normalised names of every city the `cf_capitals` benchmark uses, longest first.

    Real capitals and their aliases and counterfactual capitals come from the items themselves; the other cities
    a context lists come from the benchmark's own fact table, read by the builder's loader.
    """
    from ctxrel.benchmarks.builtin import load_country_facts
    from ctxrel.benchmarks.registry import load_benchmark

    names = set()
    for item in load_benchmark("cf_capitals").items:
        names.update(item.context_answers + item.parametric_answers)
    for fact in load_country_facts():
        names.update((fact.capital, *fact.capital_aliases, *fact.other_cities))
    return tuple(sorted({normalize(n) for n in names} - {""}, key=lambda n: (-len(n), n)))


@lru_cache(maxsize=1)
def _city_pattern() -> re.Pattern:
    return _name_pattern(eval_city_names())


@lru_cache(maxsize=1)
def _person_pattern() -> re.Pattern:
    return _name_pattern(eval_person_names())


@lru_cache(maxsize=1)
def _forbidden_words() -> frozenset[str]:
    """Words an invented name may not be: any word of a cf_capitals city, of a biographies person or of a
    real-fact table cell."""
    cells = [text for f in load_fact_tables() for text in (f.subject, f.answer, *f.aliases)]
    return frozenset(w for text in (*eval_city_names(), *eval_person_names(), *cells) for w in normalize(text).split())


def _invented_word(rng: random.Random) -> str:
    first = rng.choice(ONSETS + CLUSTERS) + rng.choice(VOWELS) + rng.choice(CODAS)
    return first + "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                           for _ in range(rng.randint(1, 2)))


def _slot_value(slot: str, rng: random.Random) -> str:
    if slot in WORD_LISTS:
        return rng.choice(WORD_LISTS[slot])
    if slot == "year":
        return str(rng.randint(1150, 1890))
    if slot == "metres":
        return f"{rng.randint(900, 6900):,}"
    word = _invented_word(rng)
    if slot in ("coin", "creature"):
        return word
    if slot == "device":
        return word + rng.choice(("scope", "graph", "wheel", "loom", "lamp", "meter"))
    if slot == "lang":
        return word.capitalize() + rng.choice(("ic", "ese", "ish", "i"))
    if slot == "person":
        return f"{word.capitalize()} {_invented_word(rng).capitalize()}"
    return word.capitalize()  # place, realm, river, peak, island


class _FreshSlots(dict):
    """A format_map mapping that invents each slot on first use, never reusing a value taken in this record."""

    def __init__(self, rng: random.Random, taken: set[str]):
        super().__init__()
        self.rng, self.taken = rng, taken

    def __missing__(self, slot: str) -> str:
        while True:
            value = _slot_value(slot, self.rng)
            words = normalize(value).split()
            if slot in WORD_LISTS or not (set(words) & (_forbidden_words() | self.taken)):
                self.taken.update(words if slot not in WORD_LISTS else ())
                self[slot] = value
                return value


def fact_statement(relation: str, subject: str, answer: str, template: str) -> str:
    article = "an" if answer[:1].lower() in "aeiou" else "a"
    return sentence_case(template.format(subject=subject, answer=answer, a_answer=f"{article} {answer}"))


def _invented_fact(rng: random.Random, taken: set[str]) -> tuple[str, str, str, str]:
    """(relation, subject, answer, statement) about freshly invented entities."""
    relation = rng.choice(sorted(INVENTED))
    slots = _FreshSlots(rng, taken)
    subject_pattern, answer_pattern = INVENTED[relation]
    subject, answer = subject_pattern.format_map(slots), answer_pattern.format_map(slots)
    return relation, subject, answer, fact_statement(relation, subject, answer, rng.choice(TEMPLATES[relation][0]))


def _insert(rng: random.Random, sentences: list[str], extra: str) -> list[str]:
    at = rng.randint(0, len(sentences))
    return sentences[:at] + [extra] + sentences[at:]


def _c_records(count: int, rng: random.Random) -> list[dict]:
    records = []
    for k in range(count):
        taken: set[str] = set()
        relation, subject, answer, statement = _invented_fact(rng, taken)
        sentences = [statement]
        for _ in range(rng.choice(C_DISTRACTORS)):
            sentences = _insert(rng, sentences, _invented_fact(rng, taken)[3])
        question = sentence_case(rng.choice(TEMPLATES[relation][1]).format(subject=subject))
        records.append(dict(kind="c", context=" ".join(sentences), question=question, answer=answer,
                            subject=subject, relation=relation, id=f"c-{k:06d}"))
    return records


def _real_records(kind: str, count: int, rng: random.Random) -> list[dict]:
    """cs, ci or s records cycling through all real facts in a seeded order.

    Each fact gets seeded template offsets; its r-th repetition (when `count` exceeds the tables) moves both
    offsets by r, so a repeated fact comes with another statement and question wording.
    """
    facts = training_fact_pool()
    order = rng.sample(range(len(facts)), len(facts))
    offsets = [(rng.randrange(6), rng.randrange(6)) for _ in facts]
    records = []
    for k in range(count):
        index, rep = order[k % len(facts)], k // len(facts)
        fact, (s_off, q_off) = facts[index], offsets[index]
        statements, questions = TEMPLATES[fact.relation]
        context = ""
        if kind == "ci":
            same = [f for f in facts if f.relation == fact.relation and f.subject != fact.subject
                    and normalize(f.answer) != normalize(fact.answer)]
            near = rng.choice(same)
            sentences = [fact_statement(near.relation, near.subject, near.answer, rng.choice(statements))]
            if rng.random() < CS_DISTRACTOR_RATE:
                other = rng.choice([f for f in facts if f.relation != fact.relation])
                sentences = _insert(rng, sentences, fact_statement(other.relation, other.subject, other.answer,
                                                           rng.choice(TEMPLATES[other.relation][0])))
            context = " ".join(sentences)
        if kind == "cs":
            sentences = [fact_statement(fact.relation, fact.subject, fact.answer, statements[(s_off + rep) % len(statements)])]
            if rng.random() < CS_DISTRACTOR_RATE:
                other = rng.choice([f for f in facts if f.relation != fact.relation])
                sentences = _insert(rng, sentences, fact_statement(other.relation, other.subject, other.answer,
                                                           rng.choice(TEMPLATES[other.relation][0])))
            context = " ".join(sentences)
        question = sentence_case(questions[(q_off + rep) % len(questions)].format(subject=fact.subject))
        records.append(dict(kind=kind, context=context, question=question, answer=fact.answer,
                            subject=fact.subject, relation=fact.relation, id=f"{kind}-{k:06d}"))
    return records


def _check_proportions(proportions: dict[str, float]) -> dict[str, float]:
    """The proportions with every kind present (optional kinds default to 0), after checking them."""
    proportions = {**dict.fromkeys(OPTIONAL_KINDS, 0.0), **proportions}
    keys = set(proportions)
    if keys != set(KINDS):
        wrong = sorted(keys - set(KINDS)) or sorted(set(KINDS) - keys)
        what = "unknown key" if keys - set(KINDS) else "missing key"
        raise CtxrelError(f"mixture proportions: {what} {', '.join(map(repr, wrong))}; give exactly "
                          f"{', '.join(KINDS)} (shares summing to 1), e.g. {{'c': 0.5, 'cs': 0.25, 's': 0.25}}")
    for key in KINDS:
        value = proportions[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise CtxrelError(f"mixture proportions: {key!r} = {value!r} must be a finite number >= 0")
    total = sum(proportions[k] for k in KINDS)
    if abs(total - 1) > 1e-6:
        raise CtxrelError(f"mixture proportions must sum to 1, found {total:g} "
                          f"({', '.join(f'{k}={proportions[k]!r}' for k in KINDS)})")
    return proportions


def kind_counts(n: int, proportions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n * share: counts sum to exactly n; ties go to the earlier kind."""
    proportions = _check_proportions(proportions)
    quotas = {k: n * proportions[k] for k in KINDS}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    by_remainder = sorted(KINDS, key=lambda k: (-(quotas[k] - counts[k]), KINDS.index(k)))
    for k in by_remainder[:n - sum(counts.values())]:
        counts[k] += 1
    return counts


def generate_mixture(n: int, proportions: dict[str, float], seed: int = 0) -> list[dict]:
    """n shuffled records with kinds in the given proportions; the same (n, proportions, seed), the same records.

    Each kind draws from its own seeded stream, so changing one kind's share does not change the records the
    other kinds produce (only how many).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CtxrelError(f"mixture size n must be a whole number >= 0, found {n!r}")
    counts = kind_counts(n, proportions)
    records = _c_records(counts["c"], random.Random(f"{seed}:c"))
    for kind in ("cs", "ci", "s"):
        records += _real_records(kind, counts[kind], random.Random(f"{seed}:{kind}"))
    random.Random(f"{seed}:shuffle").shuffle(records)
    return records


def mixture_counts(records: list[dict]) -> dict[str, int]:
    """How many records of each kind (every kind present, zero when absent)."""
    counts = dict.fromkeys(KINDS, 0)
    for record in records:
        counts[record["kind"]] += 1
    return counts


def eval_overlap(records: list[dict]) -> list[str]:
    """Human-readable ways the records touch the built-in evaluation facts (cf_capitals, biographies); an empty
    list means disjoint.

    A record overlaps if its relation or question is about capitals, or if its context, question, answer or
    subject names a cf_capitals city (a real capital, an alias, or any other city the benchmark uses) or a
    biographies person (real, substituted, or an alias), matched at word boundaries after
    `ctxrel.core.matching.normalize`.
    """
    pattern, people, problems = _city_pattern(), _person_pattern(), []
    for record in records:
        rid = record.get("id", "?")
        if "capital" in record.get("relation", "").lower():
            problems.append(f"{rid}: relation {record['relation']!r} is a capital relation")
        if "capital" in normalize(record.get("question", "")).split():
            problems.append(f"{rid}: question asks about a capital: {record['question']!r}")
        for field in ("context", "question", "answer", "subject"):
            text = normalize(record.get(field, ""))
            for city in sorted(set(pattern.findall(text))):
                problems.append(f"{rid}: {field} names cf_capitals city {city!r}: {record[field]!r}")
            for person in sorted(set(people.findall(text))):
                problems.append(f"{rid}: {field} names biographies person {person!r}: {record[field]!r}")
    return problems
