"""The guard of the semantic tier: what two wordings must share besides their meaning.

Cosine similarity alone cannot tell "Convert 5 km to miles" from "Convert 50 km to miles"
(0.85 with all-MiniLM-L6-v2) nor "Is coffee bad for you?" from "Is coffee not bad for you?"
(0.97). So each text is reduced to its *anchors*, the tokens whose change changes the answer,
and two texts are candidates only when their anchors agree:

- numbers (``5``, ``5.0`` and ``five`` agree), in order, and units of measure, in order;
- names: capitalised words not at the start of a sentence, and words at the start that are
  not common sentence openers ("What", "How" ...), possessives dropped;
- negations (``not``, ``no``, ``never``, ``n't`` ...), counted;
- code: text in backticks and identifier-like tokens (``snake_case``, ``camelCase``,
  ``a.b``, ``f()``, operators).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Anchors", "agree", "anchors"]

_COUNTING = """
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty
"""
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_COUNTING.split())}
_NUMBER_WORDS |= {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70"}
_NUMBER_WORDS |= {"eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000"}
_NUMBER_WORDS |= {"million": "1000000", "billion": "1000000000", "half": "0.5", "twice": "2"}
_UNITS = {
    "km": "km", "kilometer": "km", "kilometre": "km", "mile": "mi", "mi": "mi",
    "m": "m", "meter": "m", "metre": "m", "cm": "cm", "centimeter": "cm", "mm": "mm",
    "inch": "in", "foot": "ft", "feet": "ft", "ft": "ft", "yard": "yd", "kg": "kg",
    "kilogram": "kg", "g": "g", "gram": "g", "lb": "lb", "pound": "lb", "ounce": "oz",
    "oz": "oz", "liter": "l", "litre": "l", "l": "l", "ml": "ml", "gallon": "gal",
    "celsius": "c", "fahrenheit": "f", "kelvin": "k", "second": "s", "minute": "min",
    "hour": "h", "week": "wk", "month": "mo", "byte": "b",
    "kb": "kb", "mb": "mb", "gb": "gb", "tb": "tb", "dollar": "usd", "usd": "usd",
    "euro": "eur", "eur": "eur", "yen": "jpy", "percent": "%", "%": "%", "mph": "mph",
    "kph": "kph", "degree": "deg", "calorie": "cal", "watt": "w", "volt": "v", "acre": "acre",
    "hectare": "ha",
}  # fmt: skip
_NEGATIONS = {"not", "no", "never", "none", "nor", "nothing", "without", "cannot", "neither"}
#: Capitalised sentence openers that are not names.
_OPENER_WORDS = """
what how why when where which who whom whose is are was were do does did can could should
would will shall may might must please tell explain give list show write name describe define
summarize summarise translate convert calculate compute find i the a an in on at for of to from
by with and or but if my your our their its it this that these those there here hi hello hey ok
okay so now then also just quick briefly simply help make create let let's
"""
_OPENERS = frozenset(_OPENER_WORDS.split())
_TOKEN = re.compile(r"`[^`]*`|[A-Za-z_][\w.']*(?:\(\))?|\d+(?:[.,]\d+)*|[%$€£]|[=<>!+*/^&|-]{1,3}")
_IDENTIFIER = re.compile(r"^[a-z]+[A-Z]\w*$|^\w*_\w*$|^\w+\.\w+|\(\)$")
_SENTENCE_END = re.compile(r"[.!?:;]")


@dataclass(frozen=True, slots=True)
class Anchors:
    """The answer-changing tokens of a text."""

    numbers: tuple[str, ...]
    units: tuple[str, ...]
    names: frozenset[str]
    negations: int
    code: frozenset[str]


def _number(raw: str) -> str:
    text = raw.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return raw
    return str(int(value)) if value.is_integer() else repr(value)


def _opener(token: str, lower: str) -> bool:
    # A capitalised first word is usually an imperative or a question word ("Compose",
    # "Recommend", "Which"), not a name: only acronyms and possessives count there.
    return lower in _OPENERS or not (token.isupper() or token.endswith("'s"))


def _unit(word: str) -> str | None:
    for form in (word, word.removesuffix("s"), word.removesuffix("es")):
        if form in _UNITS:
            return _UNITS[form]
    return None


def anchors(text: str) -> Anchors:
    """The anchors of ``text``."""
    numbers: list[str] = []
    units: list[str] = []
    names: set[str] = set()
    code: set[str] = set()
    negations = 0
    previous_end = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        gap = text[previous_end : match.start()]
        starts = previous_end == 0 or bool(_SENTENCE_END.search(gap)) or "\n" in gap
        previous_end = match.end()
        lower = token.lower().removesuffix("'s").rstrip(".'")
        if token.startswith("`") or _IDENTIFIER.search(token) or not token[0].isalnum():
            code.add(token.strip("`"))
        elif token[0].isdigit():
            numbers.append(_number(token))
        elif lower in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[lower])
        elif lower in _NEGATIONS or lower.endswith("n't"):
            negations += 1
        elif (unit := _unit(lower)) is not None:
            units.append(unit)
        elif token[0].isupper() and lower != "i" and not (starts and _opener(token, lower)):
            names.add(lower)
    return Anchors(tuple(numbers), tuple(units), frozenset(names), negations, frozenset(code))


_WORD = re.compile(r"\w+")


def agree(a: str, b: str) -> bool:
    """Whether two wordings share every anchor (numbers and units in the same order), and
    are not the same words in another order ("string to integer" / "integer to string")."""
    if anchors(a) != anchors(b):
        return False
    words_a, words_b = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    return words_a == words_b or sorted(words_a) != sorted(words_b)
