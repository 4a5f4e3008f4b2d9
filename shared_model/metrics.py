"""Metric helpers shared by the tasks: text overlap, classification, boxes and points.

Every helper works on structured answers (what :meth:`shared_model.tasks.Task.parse` returns);
``None`` stands for an answer that could not be parsed and is always scored as a miss.

Generated text (reports, captions, comparisons) is scored as sacrebleu scores it: BLEU with
sacrebleu's ``13a`` tokenizer for English and its ``zh`` tokenizer for Chinese (each Chinese
character a token, the rest as ``13a``), case and punctuation kept; ROUGE-L (rouge-score's LCS)
on the same tokens. Short answers (open VQA) are compared on the tokens of :func:`tokenize`,
which folds case and drops punctuation.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")

BLEU_TOKENIZERS = {"en": "13a", "zh": "zh"}
"""sacrebleu's tokenizer per language: ``zh`` splits Chinese into characters."""

_TEXT_TOKENIZERS = {"en": Tokenizer13a(), "zh": TokenizerZh()}


def tokenize(text: str) -> list[str]:
    """Split a short answer into tokens: Chinese characters and lower-cased words.

    Parameters
    ----------
    text:
        Any text; NFKC-normalised first, so full-width letters and digits count as ASCII.

    Returns
    -------
    list of str
        Tokens in order of appearance; punctuation is dropped.
    """
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def text_tokens(text: str, lang: str) -> list[str]:
    """The tokens BLEU sees for ``text`` in ``lang`` (sacrebleu's ``13a`` or ``zh``).

    Raises
    ------
    KeyError
        For a language without a tokenizer.
    """
    return _TEXT_TOKENIZERS[lang](text.strip()).split()


class _Tokens:
    """The rouge-score tokenizer protocol over :func:`text_tokens` of one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return text_tokens(text, self.lang)


@functools.cache
def _rouge(lang: str) -> Any:
    """rouge-score's ROUGE-L scorer on ``lang``'s tokens (imported on first use: it loads nltk)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens(lang))


def check_lengths(predictions: Sequence[object], references: Sequence[object]) -> int:
    """Return the number of items, or raise ``ValueError`` when the two lengths differ."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions for {len(references)} references; "
            "score needs one prediction per reference"
        )
    return len(references)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean of a non-empty sequence."""
    return float(sum(values)) / len(values)


def corpus_bleu(
    hypotheses: Sequence[str | None], references: Sequence[str], max_order: int, lang: str
) -> float:
    """Corpus BLEU as sacrebleu computes it for ``lang``, on a 0-1 scale.

    Parameters
    ----------
    hypotheses:
        Generated texts; ``None`` is scored as an empty text.
    references:
        One reference text per hypothesis.
    max_order:
        Highest n-gram order (1 for BLEU-1, 4 for BLEU-4). sacrebleu's default exponential
        smoothing applies to orders without any match.
    lang:
        ``en`` (tokenizer ``13a``) or ``zh`` (tokenizer ``zh``: one token per character).
    """
    check_lengths(hypotheses, references)
    segments = [
        _bleu_statistics((h or "").strip(), r.strip(), max_order, lang)
        for h, r in zip(hypotheses, references, strict=True)
    ]
    if not segments:
        raise ValueError("corpus BLEU needs at least one hypothesis")
    summed = [sum(column) for column in zip(*segments, strict=True)]
    # sacrebleu reports 0-100 and may overshoot 100 by a rounding error
    return min(1.0, _bleu(lang, max_order)._compute_score_from_stats(summed).score / 100.0)


@functools.cache
def _bleu(lang: str, max_order: int) -> BLEU:
    return BLEU(tokenize=BLEU_TOKENIZERS[lang], max_ngram_order=max_order)


@functools.lru_cache(maxsize=1 << 16)
def _bleu_statistics(hypothesis: str, reference: str, max_order: int, lang: str) -> tuple:
    """One segment's BLEU statistics (lengths, n-gram matches and counts), remembered: corpus
    BLEU is computed from their sums, as sacrebleu's ``corpus_score`` does, and a bootstrap
    scores the same segments hundreds of times."""
    [statistics] = _bleu(lang, max_order)._extract_corpus_statistics([hypothesis], [[reference]])
    return tuple(statistics)


def rouge_l(hypotheses: Sequence[str | None], references: Sequence[str], lang: str) -> float:
    """Mean ROUGE-L F-measure on :func:`text_tokens` of ``lang``; ``None`` scores 0."""
    check_lengths(hypotheses, references)
    scores = [
        0.0 if h is None else _rouge_l_pair(h, r, lang)
        for h, r in zip(hypotheses, references, strict=True)
    ]
    return mean(scores)


@functools.lru_cache(maxsize=1 << 16)
def _rouge_l_pair(hypothesis: str, reference: str, lang: str) -> float:
    """One pair's ROUGE-L F-measure, remembered: a bootstrap scores the same pairs hundreds of
    times, and rouge-score's English tokens take a stemmer (about 0.5 ms a pair)."""
    return _rouge(lang).score(reference, hypothesis)["rougeL"].fmeasure


def token_recall(prediction: str | None, reference: str) -> float:
    """Fraction of the reference's tokens (with repeats) that occur in the prediction.

    A reference without any token counts as recalled when the prediction is not ``None``.
    """
    return 0.0 if prediction is None else _token_recall(prediction, reference)


@functools.lru_cache(maxsize=1 << 16)
def _token_recall(prediction: str, reference: str) -> float:
    """One pair's token recall, remembered (a bootstrap scores the same pairs hundreds of
    times)."""
    wanted = tokenize(reference)
    if not wanted:
        return 1.0
    present = set(tokenize(prediction))
    return sum(token in present for token in wanted) / len(wanted)


def accuracy(predictions: Sequence[object], references: Sequence[object]) -> float:
    """Fraction of exact matches; ``None`` never matches."""
    check_lengths(predictions, references)
    return mean([p is not None and p == r for p, r in zip(predictions, references, strict=True)])


def macro_f1(predictions: Sequence[int | None], references: Sequence[int]) -> float:
    """Per-class F1 averaged over the classes that occur in ``references``.

    A ``None`` prediction is a false negative for its reference class and a false positive for
    no class; a predicted class absent from the references only costs its reference class.
    """
    check_lengths(predictions, references)
    pairs = Counter(zip(predictions, references, strict=True))
    answered, expected = Counter(predictions), Counter(references)
    scores = []
    for label in sorted(expected):
        hits = pairs[(label, label)]
        scores.append(2.0 * hits / (answered[label] + expected[label]))
    return mean(scores)


def balanced_accuracy(predictions: Sequence[int | None], references: Sequence[int]) -> float:
    """Recall averaged over the classes that occur in ``references``; ``None`` is a miss.

    Answering every record with one class scores ``1 / classes`` however common that class
    is, so a model that learned only the majority does not look better than chance.
    """
    check_lengths(predictions, references)
    recalls = []
    for label in sorted(set(references)):
        answers = [p for p, r in zip(predictions, references, strict=True) if r == label]
        recalls.append(sum(p == label for p in answers) / len(answers))
    return mean(recalls)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two axis-aligned boxes, area for 2D and volume for 3D.

    Boxes are ``(x1, y1, x2, y2)`` or ``(x1, y1, z1, x2, y2, z2)`` with ``min <= max`` per axis.
    Boxes of different dimension have IoU 0; two identical empty boxes have IoU 1.
    """
    return _box_iou(tuple(a), tuple(b))


@functools.lru_cache(maxsize=1 << 18)
def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """:func:`box_iou` of two boxes as tuples, remembered (a bootstrap matches the same boxes
    hundreds of times)."""
    if len(a) != len(b):
        return 0.0
    dim = len(a) // 2
    inter = math.prod(max(0.0, min(a[i + dim], b[i + dim]) - max(a[i], b[i])) for i in range(dim))
    size_a = math.prod(a[i + dim] - a[i] for i in range(dim))
    size_b = math.prod(b[i + dim] - b[i] for i in range(dim))
    union = size_a + size_b - inter
    if union <= 0.0:
        return float(a == b)
    return inter / union


def best_ious(
    predicted: Sequence[Sequence[float]] | None, reference: Sequence[Sequence[float]]
) -> list[float]:
    """For each reference box, its highest IoU with any predicted box (0 without one)."""
    boxes = predicted or []
    return [max((box_iou(p, r) for p in boxes), default=0.0) for r in reference]


def count_matches(
    predicted: Sequence[Sequence[float]] | None,
    reference: Sequence[Sequence[float]],
    threshold: float,
) -> int:
    """Greedy one-to-one matching of one record's boxes; returns the true positives.

    Predicted boxes are taken in the order the model wrote them; each claims the still unmatched
    reference box with the highest IoU, and is a true positive when that IoU is at least
    ``threshold``.
    """
    free = list(reference)
    matched = 0
    for box in predicted or []:
        if not free:
            break
        ious = [box_iou(box, r) for r in free]
        best = max(range(len(free)), key=ious.__getitem__)
        if ious[best] >= threshold:
            matched += 1
            del free[best]
    return matched


def radial_error(
    predicted: Sequence[float] | None, reference: Sequence[float], miss: float
) -> float:
    """Euclidean distance between two points; ``miss`` for ``None`` or a dimension mismatch."""
    if predicted is None or len(predicted) != len(reference):
        return miss
    return math.dist(predicted, reference)
