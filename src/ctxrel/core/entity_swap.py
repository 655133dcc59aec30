"""Entity substitution with a leak report: rename one person everywhere in a text, and prove it.

`substitute(text, entity, replacement, protect=...)` is pure. The rules, in the order they apply:

* Name parts. A name is split on spaces: the first token is the given name, the last the surname core, tokens in
  between are middle names, and lower-case particles (da, de, van, von, ...) join the surname ("Leonardo da Vinci":
  given Leonardo, surname "da Vinci", core Vinci). A one-token name (Plato) is a mononym. Parts map to parts of
  the replacement: full, given+surname and middle+surname ("Graham Bell") -> full; surname ("da Vinci" or
  "Vinci") -> surname; given -> given; initial ("W. Shakespeare") -> initial + surname ("J. Caesar"); a
  mononym replacement takes every part. Name order is positional (the first token is "given" even for Mao
  Zedong), so the mapping stays consistent within a text whatever the culture of the name.
* Boundaries. A mention starts and ends at a word boundary (hyphens, spaces and punctuation are boundaries, an
  apostrophe inside a word is not: "Keeffe" is not found in "O'Keeffe"); "Vinci" is never touched in "Vincient".
* Derived words. A surname followed by one of `SUFFIXES` ("Shakespearean", "Newtonian", "Darwinism") is renamed
  with the same suffix ("Caesarean"): kept, it would leak the name. Any other longer word is left alone.
* Case. Title, UPPER and the name's own spelling match anywhere; lower case matches only multi-word forms
  ("william shakespeare"): a lower-case bare token ("bell", "jobs", "newton" the unit) is usually a common word,
  so it is left and listed as `common_word` in the leak report. The output copies the case (UPPER -> UPPER) and
  capitalises a particle at a sentence start ("van Gogh" -> "Van Gogh"). Accent-free spellings ("Godel") match.
* Possessives keep their apostrophe; a bare one after s ("Dickens'") becomes "'s" when the replacement does not
  end in s ("Caesar's").
* Other entities (protected, never renamed), checked for bare one-token mentions only:
  - a `protect` phrase (case-sensitive, at word boundaries) covers every mention inside it;
  - kin: a surname right after another capitalised word that is not a title or a sentence word ("Pierre Curie"
    when the entity is Marie Curie);
  - namesake: a given name right before another capitalised word ("William Wordsworth", "Leonardo DiCaprio");
  - named after: a surname right before another capitalised word ("Washington State", "Bering Strait");
  - place: no possessive after, and before it a locative preposition (in, at, near, outside, around, across,
    throughout; not after "interest in" etc.), a place noun + "of" ("town of Vinci", "University of
    Washington"), or a motion verb + to/from ("moved to Washington").
  A part that a kin or namesake shares is ambiguous in that text: its bare mentions are left and reported as
  leaks ("Curie" alone after "Pierre Curie" could be either), so the caller rewrites or protects them.
* Leak report: every word of the new text outside the inserted replacements whose accent- and case-folded form
  is a token of the original name (particles and initials excepted) or a derived form of its surname, with its
  status: `protected` (inside a protected span), `common_word` (lower case bare token) or `leak`.
* Over-replacement report: a structural audit of each replacement: it must not touch a word character, must
  not overlap a protected span, must not be the second half of a capitalised hyphenated name ("Jean-Paul"),
  and a bare name must not follow an article that makes it a thing ("bought a Picasso.").

The engine works on NFC text (the output is NFC) and does not resolve pronouns, nicknames, inverted names
("Shakespeare, William") or middle names used alone (reported as leaks).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from ctxrel.core.errors import CtxrelError

PARTICLES = frozenset("da de di del della der des du van von la le ten ter den dos das do bin ibn al el".split())
SUFFIXES = ("eans", "ians", "isms", "ists", "esque", "ean", "ian", "ism", "ist", "an")
TITLES = frozenset(("mr mrs ms miss dr doctor sir dame lord lady madame monsieur president general king queen "
                    "prince princess professor prof saint st pope emperor empress captain admiral colonel "
                    "senator governor judge father reverend chancellor").split())
# Capitalised words that start sentences or clauses, months and days: never part of another person's name.
SENTENCE_WORDS = frozenset((
    "a an the in at on of by for from with to into after before during when while as and but or so yet then "
    "later early young old although though since until because if once there here this that these those his her "
    "its their our my your he she it they we i both also only even today now meanwhile however still soon "
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday").split())
PLACE_PREPS = frozenset("in at near outside around across throughout".split())
PERSON_IN = frozenset("interest interested belief believed believe faith trust".split())
PLACE_NOUNS = frozenset(("town city village state county province region district port island university "
                         "commune municipality republic strait bay river lake cape kingdom").split())
MOTION_VERBS = frozenset(("moved returned travelled traveled went came fled sailed emigrated relocated flew drove "
                          "walked").split())
ARTICLES = frozenset({"the", "a", "an"})
APOSTROPHES = "'\u2019"


def strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def fold(word: str) -> str:
    """Case- and accent-free form of a word ("Gödel" -> "godel")."""
    return strip_accents(word).casefold()


@dataclass(frozen=True)
class NameParts:
    full: str
    given: str | None  # None for a mononym
    middle: tuple[str, ...]
    surname: str  # with particles: "da Vinci"
    core: str  # last token: "Vinci"

    @property
    def particles(self) -> bool:
        return self.surname != self.core


def parse_name(name: str) -> NameParts:
    """Split a name into given / middle / surname (particles joined to it) / core. See the module rules."""
    tokens = unicodedata.normalize("NFC", name).split()
    if not tokens:
        raise CtxrelError("empty entity name: pass the full name, e.g. --entity 'William Shakespeare'")
    if len(tokens) == 1:
        return NameParts(tokens[0], None, (), tokens[0], tokens[0])
    first_particle = next((i for i in range(1, len(tokens) - 1) if tokens[i] in PARTICLES), len(tokens) - 1)
    return NameParts(" ".join(tokens), tokens[0], tuple(tokens[1:first_particle]),
                     " ".join(tokens[first_particle:]), tokens[-1])


@dataclass(frozen=True)
class Span:
    """A span of the original text and what stood there."""

    start: int  # span in the original text
    end: int
    original: str


@dataclass(frozen=True)
class Replacement(Span):
    replacement: str
    rule: str  # full | given+surname | initial | surname | given | derived
    new_start: int = 0  # span in the new text
    new_end: int = 0


@dataclass(frozen=True)
class Finding:
    """A token of the original name still present in the new text (positions in the new text)."""

    start: int
    end: int
    text: str
    status: str  # protected | leak | common_word
    reason: str


@dataclass(frozen=True)
class OverReplacement(Span):
    reason: str


@dataclass(frozen=True)
class SubstitutionResult:
    text: str
    replacements: list[Replacement]
    leak_report: list[Finding]
    over_replacements: list[OverReplacement]
    protected: list[tuple[int, int, str]] = field(default_factory=list)  # original spans + reason

    @property
    def leaks(self) -> int:
        return sum(f.status == "leak" for f in self.leak_report)

    def summary(self) -> dict:
        return {"replacements": len(self.replacements), "leaks": self.leaks,
                "protected": sum(f.status == "protected" for f in self.leak_report),
                "common_words": sum(f.status == "common_word" for f in self.leak_report),
                "over_replacements": len(self.over_replacements)}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "replacements": [asdict(r) for r in self.replacements],
                "leak_report": [asdict(f) for f in self.leak_report],
                "over_replacements": [asdict(o) for o in self.over_replacements]}


@dataclass(frozen=True)
class _Form:
    canon: str  # the form as written in the name ("da Vinci", "W. Shakespeare")
    rule: str
    replacement: str
    part: str  # full | given | surname
    bare: bool  # a single token, subject to the other-entity checks

    @property
    def pattern(self) -> str:
        if self.rule == "initial":
            return re.escape(self.canon[:2]) + r"\s*" + r"\s+".join(map(re.escape, self.canon[2:].split()))
        body = r"\s+".join(map(re.escape, self.canon.split()))
        return body + (f"(?:{'|'.join(SUFFIXES)})" if self.rule == "derived" else "") + r"(?!\w)"


def _forms(name: NameParts, repl: NameParts) -> list[_Form]:
    r_given = repl.given if repl.given else repl.full
    r_initial = f"{repl.given[0]}. {repl.surname}" if repl.given else repl.full
    if name.given is None:
        forms = [_Form(name.full, "full", repl.full, "surname", True)]
    else:
        forms = [_Form(name.full, "full", repl.full, "full", False)]
        if name.middle:
            forms.append(_Form(f"{name.given} {name.surname}", "given+surname", repl.full, "full", False))
            forms += [_Form(" ".join((*name.middle[i:], name.surname)), "middle+surname", repl.full, "full", False)
                      for i in range(len(name.middle))]  # "Graham Bell"
        forms.append(_Form(f"{name.given[0]}. {name.surname}", "initial", r_initial, "full", False))
        if name.particles:
            forms.append(_Form(name.surname, "surname", repl.surname, "surname", False))
        forms += [_Form(name.core, "surname", repl.surname, "surname", True),
                  _Form(name.given, "given", r_given, "given", True)]
    forms.append(_Form(name.core, "derived", repl.core, "surname", True))
    plain = [_Form(strip_accents(f.canon), f.rule, f.replacement, f.part, f.bare) for f in forms
             if strip_accents(f.canon) != f.canon]  # accent-free spellings ("Godel")
    return forms + plain


def derive(core: str, suffix: str) -> str:
    """The replacement's form of a derived word: -an/-ean/-ian adjectives follow the new name's ending
    (Shakespearean -> Caesarian, Newtonian -> Lovelacean), other suffixes are appended ("Darwinism")."""
    s = suffix.lower()
    plural = "s" if s in ("ans", "eans", "ians") else ""
    if s.rstrip("s") in ("an", "ean", "ian"):
        ending = "an" if core.endswith("e") else "n" if core.endswith("a") else "ian"
        return core + ending + plural
    return core + s


def _case_ok(found: str, canon: str, bare: bool) -> bool:
    """Own spelling, UPPER, Title or lower per token; a bare (one-token) mention must not start lower-case."""
    if bare and found[:1].islower():
        return False
    f_tok, c_tok = found.replace(".", ". ").split(), canon.replace(".", ". ").split()
    if len(f_tok) != len(c_tok):
        return False
    return all(f in {c, c.upper(), c.lower(), c[:1].upper() + c[1:]} for f, c in zip(f_tok, c_tok))


def _render(repl: str, found: str, sentence_start: bool) -> str:
    letters = [ch for ch in found if ch.isalpha()]
    if len(letters) > 1 and all(ch.isupper() for ch in letters):
        return repl.upper()
    if all(ch.islower() for ch in letters):
        return repl.lower()
    if sentence_start and repl[:1].islower():
        return repl[:1].upper() + repl[1:]
    return repl


def _sentence_start(text: str, start: int) -> bool:
    i = start
    while i > 0 and text[i - 1] in " \t\"'\u201c\u2018(":
        i -= 1
    return i == 0 or text[i - 1] in ".!?\n"


_WORD = re.compile(r"\w+")


def _prev_words(text: str, start: int) -> list[str]:
    """Up to two words right before `start`, nearest first, as long as only spaces separate them."""
    words, i = [], start
    while len(words) < 2:
        j = i
        while j > 0 and text[j - 1] == " ":
            j -= 1
        k = j
        while k > 0 and (text[k - 1].isalnum() or text[k - 1] == "_"):
            k -= 1
        if j == i or k == j:
            break
        words.append(text[k:j])
        i = k
    return words


def _next_word(text: str, end: int) -> str:
    m = re.match(r" (\w[\w.]*)", text[end:])
    return m.group(1) if m else ""


def _other_entity(text: str, start: int, end: int, form: _Form, own: set[str]) -> tuple[str, str] | None:
    """(kind, reason) when a bare mention names something else; see the module rules."""
    after = text[end:end + 1]
    possessive = after != "" and after in APOSTROPHES
    prev, nxt = _prev_words(text, start), _next_word(text, end)
    shouting = text[start:end].isupper()  # in UPPER text every word is capitalised: no evidence

    def capital(w: str) -> bool:
        return (w[:1].isupper() and not (shouting and w.isupper()) and fold(w) not in SENTENCE_WORDS | TITLES
                and fold(w) not in own)
    if form.part == "surname" and prev and capital(prev[0]):
        return "kin", f"another person with this surname: {prev[0]} {text[start:end]}"
    if form.part == "given" and not possessive and nxt and capital(nxt):
        return "namesake", f"another person with this given name: {text[start:end]} {nxt}"
    if form.part == "surname" and not possessive and nxt and capital(nxt):
        return "named_after", f"another entity: {text[start:end]} {nxt}"
    if possessive or not prev:
        return None
    p0, p1 = fold(prev[0]), fold(prev[1]) if len(prev) > 1 else ""
    if (p0 in PLACE_PREPS and p1 not in PERSON_IN) or (p0 == "of" and p1 in PLACE_NOUNS) or (
            p0 in {"to", "from"} and p1 in MOTION_VERBS):
        return "place", f"place: {' '.join(reversed(prev))} {text[start:end]}"
    return None


def _protect_spans(text: str, protect: list[str]) -> list[tuple[int, int, str]]:
    spans = []
    for phrase in protect:
        phrase = unicodedata.normalize("NFC", phrase).strip()
        if phrase:
            for m in re.finditer(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text):
                spans.append((m.start(), m.end(), f"protect phrase {phrase!r}"))
    return spans


def _overlaps(a: int, b: int, spans) -> bool:
    return any(a < e and s < b for s, e, *_ in spans)


def substitute(text: str, entity: str, replacement: str, *, protect: list[str] | tuple[str, ...] = ()
               ) -> SubstitutionResult:
    """Rename every mention of `entity` to `replacement` in `text`; report leaks and over-replacements."""
    text = unicodedata.normalize("NFC", text)
    name, repl = parse_name(entity), parse_name(replacement)
    own = {fold(t) for t in name.full.split()}
    protected = _protect_spans(text, list(protect))
    candidates = []
    for form in _forms(name, repl):
        rx = re.compile(r"(?<!\w)(?<!\w['\u2019])" + form.pattern, re.IGNORECASE)
        for m in rx.finditer(text):
            found = m.group()[:len(form.canon)] if form.rule == "derived" else m.group()
            if _case_ok(found, form.canon, form.bare):
                candidates.append((m.start(), m.end(), form))
    candidates.sort(key=lambda c: (c[0], -(c[1] - c[0])))
    chosen, last_end = [], -1
    for start, end, form in candidates:
        if start >= last_end:
            chosen.append((start, end, form))
            last_end = end
    bearers, kept = [], []  # bearers: (start, part, "entity" | "other") -- who was mentioned where
    for start, end, form in chosen:
        if _overlaps(start, end, protected):
            continue
        other = _other_entity(text, start, end, form, own) if form.bare and form.rule != "derived" else None
        if other:
            protected.append((start, end, other[1]))
            if other[0] in ("kin", "namesake"):
                bearers.append((start, form.part, "other"))
            continue
        kept.append((start, end, form))
        if not form.bare:  # the full name (or initial + surname) names the entity by both parts
            bearers += [(start, "surname", "entity"), (start, "given", "entity")]
    leak_reasons = {}
    out, pos, shift, replacements = [], 0, 0, []
    for start, end, form in kept:
        who = _bearer(text, bearers, start, form.part) if form.bare else "entity"
        what = "given name" if form.part == "given" else form.part
        if who == "ambiguous":
            leak_reasons[(start, end)] = f"ambiguous {what}: another person in the text shares it"
            continue
        if who == "other":
            protected.append((start, end, f"another person's {what}: the most recently mentioned bearer"))
            continue
        if form.bare and form.rule != "derived":
            bearers.append((start, form.part, "entity"))
        found = text[start:end]
        new = form.replacement
        if form.rule == "derived":
            new = derive(new, found[len(form.canon):])
        new = _render(new, found, _sentence_start(text, start))
        end_ext = end
        if _bare_possessive(text, start, end) and not new.lower().endswith("s"):
            new, end_ext = new + text[end] + "s", end + 1  # Dickens' -> Caesar's
        out.append(text[pos:start])
        new_start = start + shift
        out.append(new)
        shift += len(new) - (end_ext - start)
        replacements.append(Replacement(start, end_ext, text[start:end_ext], new, form.rule, new_start,
                                        new_start + len(new)))
        pos = end_ext
    out.append(text[pos:])
    new_text = "".join(out)
    return SubstitutionResult(new_text, replacements, _leak_scan(new_text, name, replacements, protected,
                                                                  leak_reasons, text),
                              _audit(text, replacements, protected, name), sorted(protected))


def _sentence_index(text: str, pos: int) -> int:
    return len(re.findall(r"[.!?](?=\s)", text[:pos]))


def _bearer(text: str, bearers: list[tuple[int, str, str]], start: int, part: str) -> str:
    """Whom a bare surname (or given name) at `start` refers to: the most recently mentioned person who bears it
    ("entity" or "other"); "ambiguous" when that cannot be decided -- the two bearers last mentioned in the same
    sentence, or no bearer mentioned yet while another person with this part appears later in the text."""
    mine = sorted((s, who) for s, p, who in bearers if p == part)
    before = [(s, who) for s, who in mine if s < start]
    if not before:
        return "ambiguous" if any(who == "other" for _, who in mine) else "entity"
    last, who = before[-1]
    rivals = [s for s, w in before if w != who]
    if rivals and _sentence_index(text, rivals[-1]) == _sentence_index(text, last):
        return "ambiguous"
    return who


def _bare_possessive(text: str, start: int, end: int) -> bool:
    """"Dickens' novels": an apostrophe after a final s, not closing a quote that opened before the name."""
    return (text[end - 1:end] in "sS" and text[end:end + 1] != "" and text[end] in APOSTROPHES
            and not text[end + 1:end + 2].isalnum() and (start == 0 or text[start - 1] not in APOSTROPHES))


def _to_new(pos: int, replacements: list[Replacement]) -> int:
    return pos + sum(len(r.replacement) - (r.end - r.start) for r in replacements if r.end <= pos)


def _leak_scan(new_text, name, replacements, protected, leak_reasons, text) -> list[Finding]:
    tokens = {fold(t) for t in name.full.split() if t not in PARTICLES and len(t.strip(".")) > 1}
    derived = {fold(name.core) + s for s in SUFFIXES}
    new_protected = [(_to_new(s, replacements), _to_new(e, replacements), why) for s, e, why in protected]
    new_reasons = {(_to_new(s, replacements), _to_new(e, replacements)): why for (s, e), why in leak_reasons.items()}
    findings = []
    for m in _WORD.finditer(new_text):
        word, s, e = m.group(), m.start(), m.end()
        if _overlaps(s, e, [(r.new_start, r.new_end) for r in replacements]):
            continue
        f = fold(word)
        if f not in tokens and f not in derived:
            continue
        hit = next((why for ps, pe, why in new_protected if ps <= s and e <= pe), None)
        if hit:
            findings.append(Finding(s, e, word, "protected", hit))
        elif word[:1].islower():
            findings.append(Finding(s, e, word, "common_word", "lower-case token: usually a common word"))
        else:
            findings.append(Finding(s, e, word, "leak", new_reasons.get((s, e), "not renamed")))
    return findings


def _ends_phrase(text: str, end: int) -> bool:
    """After "the/a NAME": end, punctuation (not a hyphen) or is/was/of: the name is the noun, not a modifier
    ("a Picasso.", "the Newton is" flag; "a Shakespeare play", "a Shakespeare-like plot" do not)."""
    rest = text[end:].lstrip("'\u2019s") if text[end:end + 1] in APOSTROPHES else text[end:]
    if not rest or (not rest[0].isspace() and rest[0] != "-"):
        return True
    nxt = _next_word(rest, 0) if rest[0] == " " else ""
    return nxt.lower() in ("is", "was", "of")


def _audit(text, replacements, protected, name) -> list[OverReplacement]:
    bad = []
    for r in replacements:
        single = r.rule in ("surname", "given") and len(r.original.split()) == 1
        prev = _prev_words(text, r.start)
        if (r.start > 0 and text[r.start - 1].isalnum()) or (r.end < len(text) and text[r.end].isalnum()
                                                                  and r.rule != "derived"):
            bad.append(OverReplacement(r.start, r.end, r.original, "touches a word character (inside a word)"))
        elif r.start > 1 and text[r.start - 1] == "-" and text[r.start - 2].isalpha() and r.original[:1].isupper() \
                and re.search(r"(?<!\w)[A-Z]\w*-$", text[max(0, r.start - 40):r.start]):
            bad.append(OverReplacement(r.start, r.end, r.original, "second half of a hyphenated name (Jean-Paul)"))
        elif _overlaps(r.start, r.end, protected):
            bad.append(OverReplacement(r.start, r.end, r.original, "overlaps a protected span"))
        elif single and prev and prev[0] in ARTICLES and _ends_phrase(text, r.end):
            bad.append(OverReplacement(r.start, r.end, r.original, f"article before a bare name: '{prev[0]} "
                                       f"{r.original}' is likely a thing, not the person"))
    return bad
