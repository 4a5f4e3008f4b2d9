"""Numbered options: ``2:no`` in English, ``2：否`` in Chinese, and reading them back.

Closed VQA numbers its options from 1 and classification from 0 (UMIT's conventions); the
numbering base is a parameter everywhere here. The strict reading accepts exactly
``{number}{separator}{option}`` with the record language's separator, a valid number and that
number's own option text; the lenient reading also takes an option's text alone, a bare or
bracketed number, lead-ins and an option named inside a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared_model.tasks.base import check_lang
from shared_model.tasks.text import fold, has_cjk, normalize_answer

SEPARATOR = {"en": ":", "zh": "："}
"""Between an option's number and its text."""

_LEAD_IN = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*:?|答案\s*(?:是|为)?\s*:?|我?选择)\s*"
)
_NUMBERED = re.compile(
    r"^(?:option|choice|class|category|选项|类别)?\s*[(\[]?\s*(?P<number>\d{1,6})\s*"
    r"(?:[)\]:.,\-]|\s|$)\s*(?P<rest>.*)$"
)
_WORD_EDGE = r"[^\W_]"
_STRICT = re.compile(r"(0|[1-9][0-9]*)([:：])(.*)", re.DOTALL)


def format_choice(index: int, options: Sequence[str], base: int, lang: str) -> str:
    """``{index + base}{separator}{option}``, e.g. ``2:no`` or ``1：肺炎``."""
    if not 0 <= index < len(options):
        raise ValueError(f"option index {index} is outside the {len(options)} options {options}")
    return f"{index + base}{SEPARATOR[check_lang(lang)]}{options[index]}"


def choice_texts(options: Sequence[str], base: int, lang: str) -> list[str]:
    """Every option written as the answer that chooses it, in order."""
    return [format_choice(i, options, base, lang) for i in range(len(options))]


def format_options(options: Sequence[str], base: int, lang: str) -> str:
    """All options, one numbered option a line."""
    return "\n".join(choice_texts(options, base, lang))


def option_index(answer: object, options: Sequence[str]) -> int:
    """Index of a record's answer: an ``int`` index, or the text of one of ``options``.

    Raises
    ------
    ValueError
        When the answer is neither a valid index nor (after normalisation) an option.
    """
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(options):
            return answer
    elif isinstance(answer, str):
        wanted = normalize_answer(answer)
        for index, option in enumerate(options):
            if normalize_answer(option) == wanted:
                return index
    raise ValueError(f"answer {answer!r} is not one of the options {list(options)}")


def parse_choice(text: str, options: Sequence[str], base: int, lang: str) -> int | None:
    """Strict reading of a chosen option: exactly ``n:text`` (``n：text`` in Chinese).

    ``n`` is a valid option number (no sign or leading zero) and ``text`` is option ``n``'s own
    text; both sides are compared after NFKC, case folding and trimming white space. Nothing
    else may be in the answer.

    Returns
    -------
    int or None
        The 0-based option index, ``None`` for any other answer.
    """
    match = _STRICT.fullmatch(text.strip())
    if match is None or match[2] != SEPARATOR[check_lang(lang)]:
        return None
    index = int(match[1]) - base
    if not 0 <= index < len(options) or fold(match[3]) != fold(options[index]):
        return None
    return index


def parse_choice_lenient(text: str, options: Sequence[str], base: int) -> int | None:
    """Lenient reading of the chosen option's 0-based index from generated text.

    Tried in order: the whole answer is an option's text (case-insensitive, after
    :func:`~shared_model.tasks.text.normalize_answer`); it starts with a valid option number
    (``2``, ``2:no``, ``(2) no``, ``option 2``, ``选项2``; the number wins over the text that
    follows); the text after an out-of-range number is an option; exactly one option of two or
    more characters appears in the answer as a whole word (``the answer is no``).

    Returns
    -------
    int or None
        The 0-based option index, ``None`` when no option can be told apart.
    """
    normalized = [normalize_answer(option) for option in options]
    answer = normalize_answer(_LEAD_IN.sub("", normalize_answer(text)))
    if answer in normalized:
        return normalized.index(answer)
    numbered = _NUMBERED.match(answer)
    if numbered:
        index = int(numbered["number"]) - base
        if 0 <= index < len(options):
            return index
        rest = normalize_answer(numbered["rest"])
        if rest in normalized:
            return normalized.index(rest)
    return _contained_option(answer, normalized)


def _contained_option(answer: str, options: Sequence[str]) -> int | None:
    found = [i for i, option in enumerate(options) if len(option) > 1 and _contains(answer, option)]
    # an option inside a longer found option ("lung" in "left lung") is not a rival
    found = [i for i in found if not any(j != i and options[i] in options[j] for j in found)]
    return found[0] if len(found) == 1 else None


def _contains(answer: str, option: str) -> bool:
    if has_cjk(option):
        return option in answer
    return re.search(rf"(?<!{_WORD_EDGE}){re.escape(option)}(?!{_WORD_EDGE})", answer) is not None


def choice_to_source(value: object, options: Sequence[str]) -> object:
    """An option index as people read it, ``{"index": i, "option": text}``; other values as
    they are."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"index": value, "option": str(options[value])}
    return value
