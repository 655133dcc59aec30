"""Built-in knowledge-conflict benchmarks, generated from fact tables that ctxrel maintains itself.

`cf_capitals` asks for the capital of a country after a context that relocates the capital to another major city
of the same country (the study's "capital relocation" conflicts). It needs no download and is deterministic.

The fact table `facts/countries.csv` (columns `country,capital,other_cities,capital_aliases`, cities separated by `;`) was written
by hand for ctxrel from general knowledge; it copies no dataset. Rules for editing it, all checked by
`tests/test_builtin.py`:

* the capital is the one commonly given in English (Ankara, Canberra, Ottawa, Bern); leave out countries whose
  capital is disputed or ambiguous (South Africa, Bolivia, Sri Lanka) or recently renamed (Kazakhstan);
* leave out countries whose capital contains the country's name or the reverse (Mexico City, Singapore, Tunis);
* 2 or 3 other major cities, none the capital, largest first; the last becomes the counterfactual capital
  (the largest is often mistaken for the capital, which would confound context use with a misconception);
* `capital_aliases`: other accepted spellings of the real capital, `;`-separated, usually empty;
* no name (country or city) may occur, at word boundaries after `ctxrel.core.matching.normalize`, inside another name
  of the table, and no name may repeat (Valencia is Spain's, so Venezuela lists Maracay);
* a country written with "the" in English must match `_needs_article` (United ..., ... Republic, Netherlands,
  Philippines).

Bump `BUILTIN_VERSION` whenever the table or the templates change: scores are comparable only within a version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ctxrel.benchmarks.biographies import build_biographies
from ctxrel.benchmarks.facts import fact_rows
from ctxrel.benchmarks.schema import ConflictItem, validate_item
from ctxrel.core.errors import InputError
from ctxrel.core.matching import normalize
from ctxrel.core.prompts import sentence_case

BUILTIN_VERSION = 1
FACTS_FILE = "countries.csv"
HEADER = ["country", "capital", "other_cities", "capital_aliases"]

# Counterfactual contexts, one per position of the asserted answer. Placeholders: {cf} the counterfactual
# capital, {country} (with "the" where English needs it), {others} the country's remaining cities.
# A template must never name the real capital.
TEMPLATES: dict[str, str] = {
    "answer_first": (
        "{cf} is the capital city of {country}. The parliament, the ministries and the supreme court all moved "
        "there in 2019, and the head of state now lives and works in the city. Other large cities of the "
        "country include {others}, each with its own history, universities and busy markets."
    ),
    "answer_middle": (
        "{country} is known for cities such as {others}, each with its own history, universities and busy "
        "markets. Since a national reform in 2019, the capital city of {country} has been {cf}, where the "
        "parliament and the ministries now sit. Most visitors arrive by train or by air, and the main "
        "airports are busiest in summer."
    ),
    "answer_last": (
        "In 2019, {country} passed a law that moved its parliament, its ministries and its supreme court to a "
        "new seat of government. Cities such as {others} were considered during a long public debate, and the "
        "move took several years to complete. Today the capital city of {country} is {cf}."
    ),
}
QUESTION = "What is the capital city of {country}?"
# The same relocations told the way the CPI study's released capitals file tells them: the context also names
# the real (former) capital, so memory has an entity *in the context* to pull toward. {capital} = the real one.
MOVED_TEMPLATES: dict[str, str] = {
    "answer_first": (
        "{cf} is the capital city of {country}. In 2019 the parliament, the ministries and the supreme court left "
        "{capital}, the capital for centuries, and moved there; the head of state now lives and works in {cf}. "
        "Other large cities of the country include {others}."
    ),
    "answer_middle": (
        "For centuries {capital} was the capital city of {country}. Since a national reform in 2019, the capital "
        "city of {country} has been {cf}, where the parliament and the ministries now sit. {capital} remains a "
        "large city, known for its universities and busy markets."
    ),
    "answer_last": (
        "In 2019, {country} passed a law that moved its parliament, its ministries and its supreme court out of "
        "{capital}, the old capital. Cities such as {others} were considered during a long public debate, and the "
        "move took several years to complete. Today the capital city of {country} is {cf}."
    ),
}


@dataclass(frozen=True)
class CountryFact:
    """One row of the fact table; `line` is its line in the CSV file (header = line 1)."""

    country: str
    capital: str
    other_cities: tuple[str, ...]
    capital_aliases: tuple[str, ...] = ()  # other accepted spellings of the real capital ("Kiev")
    line: int = 0


def load_country_facts() -> list[CountryFact]:
    """Read `facts/countries.csv` shipped inside the package, checking each row's shape."""
    facts = []
    for path, line, row in fact_rows(FACTS_FILE, HEADER):
        country, capital = row[0].strip(), row[1].strip()
        others = tuple(c.strip() for c in row[2].split(";") if c.strip())
        aliases = tuple(c.strip() for c in row[3].split(";") if c.strip())
        if not country or not capital:
            raise InputError("empty country or capital", path=path, line=line)
        if not 2 <= len(others) <= 3:
            raise InputError(f"other_cities needs 2 or 3 cities separated by ';', found {len(others)}",
                             path=path, line=line, key="other_cities")
        if normalize(capital) in {normalize(c) for c in others}:
            raise InputError(f"the capital {capital!r} is also listed among other_cities",
                             path=path, line=line, key="other_cities")
        facts.append(CountryFact(country, capital, others, aliases, line))
    return facts


def _needs_article(country: str) -> bool:
    return country.startswith("United ") or country.endswith(("Republic", "lands", "Philippines"))


def with_article(country: str) -> str:
    return f"the {country}" if _needs_article(country) else country


def _join(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def slug(text: str) -> str:
    return normalize(text).replace(" ", "_")


def build_cf_capitals() -> list[ConflictItem]:
    return _capital_items("cf_capitals", TEMPLATES)


def build_cf_capitals_moved() -> list[ConflictItem]:
    """`cf_capitals` with contexts that also name the real capital as the former one (`MOVED_TEMPLATES`), as
    most contexts of the CPI study's released capitals file do. Same countries, counterfactual capitals,
    questions and positions; only the contexts differ, so the two benchmarks together show what naming the
    memorised answer in the context does to a trajectory."""
    return _capital_items("cf_capitals_moved", MOVED_TEMPLATES)


def _capital_items(benchmark: str, templates: dict[str, str]) -> list[ConflictItem]:
    """Capital-relocation conflicts: does the model answer with the capital the context asserts?

    Measures context reliance under a knowledge conflict on facts a small LM knows well. Each country yields one
    item per template; the templates differ only in where the asserted capital sits in the context (first,
    middle after a distractor sentence, last), so the `category` split shows position effects. The
    counterfactual capital is the country's last-listed other city: plausible, never the real capital, and
    not the largest city (Istanbul, Sydney, Mumbai), which small models often give as the capital by mistake.
    Deterministic: same table and templates, same items.
    """
    items = []
    for fact in load_country_facts():
        cf, rest = fact.other_cities[-1], fact.other_cities[:-1]
        country = with_article(fact.country)
        question = sentence_case(QUESTION.format(country=country))
        for name, template in templates.items():
            context = sentence_case(template.format(cf=cf, country=country, others=_join(rest),
                                                     capital=fact.capital))
            item = ConflictItem(
                id=f"{benchmark}/{slug(fact.country)}/{name}",
                benchmark=benchmark,
                category=name,
                context=context,
                question=question,
                context_answer=cf,
                parametric_answer=fact.capital,
                parametric_aliases=fact.capital_aliases,
                source=f"ctxrel:{FACTS_FILE}:{fact.line}",
                meta={"country": fact.country, "template": name, "version": BUILTIN_VERSION},
            )
            validate_item(item, path="builtin", line=None)
            items.append(item)
    return items


BUILTINS: dict[str, Callable[[], list[ConflictItem]]] = {"cf_capitals": build_cf_capitals,
                                                         "cf_capitals_moved": build_cf_capitals_moved,
                                                         "biographies": build_biographies}
