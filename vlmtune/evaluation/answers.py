"""Which option a free-text answer picks, for multiple-choice benchmarks (MMBench, ScienceQA).

    extract_choice("(B) a cat", {"A": "dog", "B": "cat"})      # "B"
    extract_choice("cat", {"A": "dog", "B": "cat"})            # "B"  (the option's text)
    extract_choice("答案是C。", {"A": "1", "B": "2", "C": "3"})  # "C"
    extract_choice("I am not sure.", {"A": "dog", "B": "cat"}) # None (unparseable: counted and listed)

Tried in order, first hit wins:
  1. the whole answer is one letter: `B`, `b`, `(B)`, `B.`, `**B**`;
  2. it starts with a letter and a separator: `B. cat`, `B) cat`, `(B) cat`, `B: cat`, `B。`,
     or `B cat` when what follows is option B's text;
  3. an explicit phrase naming one letter: `The answer is B`, `Answer: (B)`, `option B`, `答案是B`, `选B`;
  4. exactly one distinct letter in parentheses somewhere: `... so (B).`;
  5. the option's text: the whole answer equals one option, or exactly one option's text occurs in
     it (an option contained in another matching option does not count separately).
A letter that names no option (`E` when there are four) is unparseable, never silently wrong.
Full-width forms (`（Ｂ）`, `Ｂ．`) are folded first (NFKC), so Chinese answers go through the same rules.
"""

from __future__ import annotations

import re
import string
import unicodedata

LETTERS = string.ascii_uppercase
_SEPARATORS = ".:,;。、)]"
_PHRASE = re.compile(
    r"(?:(?i:\banswer\b|\boption\b|\bchoice\b)\s*(?:(?i:is|would be|should be)\s*)?[:=]?\s*(?:(?i:option)\s*)?"
    r"|(?:答案|选项|选择|应选|选)\s*(?:是|为|应为|应该是)?\s*[:]?\s*)"
    r"[\(\[]?([A-Z])(?![A-Za-z0-9])"
)
_PAREN = re.compile(r"\(([A-Z])\)")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").strip()


def normalize_option_text(text: str) -> str:
    """Lower-case, whitespace collapsed, outer punctuation dropped: how option texts are compared."""
    t = " ".join(_fold(text).lower().split())
    return t.strip(" .。!！?？\"'`*")


def _contains(haystack: str, needle: str) -> bool:
    if not needle:
        return False
    if needle.isascii():  # whole words only, so option "cat" doesn't match "category"
        return re.search(r"(?<![0-9a-z])" + re.escape(needle) + r"(?![0-9a-z])", haystack) is not None
    return needle in haystack


def extract_choice(text: str, options: dict[str, str]) -> str | None:
    """The letter of the option `text` picks, or None when it picks none (or several)."""
    t = _fold(text).strip("*`\"' \t\n")
    if not t:
        return None

    # 1. a bare letter
    m = re.fullmatch(r"[\(\[]?([A-Za-z])[\)\]]?[.:,;。!]?", t)
    if m:
        letter = m.group(1).upper()
        return letter if letter in options else None

    # 2. a leading letter with a separator
    m = re.match(r"([\(\[])?([A-Z])([\)\]])?(.*)", t, re.S)
    if m:
        opened, letter, closed, rest = m.groups()
        if closed:  # "(B)", "B)", "[B]"
            return letter if letter in options else None
        if not opened and rest[:1] in tuple(_SEPARATORS) and not re.match(r"\.[A-Za-z]\.", rest):  # not "A.I."
            return letter if letter in options else None
        if not opened and rest[:1].isspace() and letter in options:
            after = normalize_option_text(rest)
            want = normalize_option_text(options[letter])
            if want and after.startswith(want):
                return letter

    # 3. "the answer is B", "答案是B"
    found = {x for x in _PHRASE.findall(t)}
    if found:
        return found.pop() if len(found) == 1 and next(iter(found)) in options else None

    # 4. one distinct "(B)" anywhere
    found = set(_PAREN.findall(t))
    if len(found) == 1:
        letter = found.pop()
        return letter if letter in options else None

    # 5. the option's text
    said = normalize_option_text(t)
    texts = {letter: normalize_option_text(opt) for letter, opt in options.items()}
    exact = [letter for letter, opt in texts.items() if opt and opt == said]
    if len(exact) == 1:
        return exact[0]
    hits = [letter for letter, opt in texts.items() if _contains(said, opt)]
    hits = [a for a in hits if not any(a != b and texts[a] != texts[b] and texts[a] in texts[b] for b in hits)]
    if len(hits) == 1:
        return hits[0]
    return None


def choice_of(item_id: str, predictions: dict[str, str], options: dict[str, str], unparseable: list) -> tuple[str | None, str | None]:
    """(prediction text or None when missing, extracted letter or None); an unparseable answer is listed."""
    pred = predictions.get(item_id)
    if pred is None:
        return None, None
    letter = extract_choice(pred, options)
    if letter is None:
        unparseable.append({"id": item_id, "prediction": pred})
    return pred, letter
