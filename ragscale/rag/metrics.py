"""Answer scores as Yue et al. 2025 report them: EM, token F1 and Acc, max over gold aliases.

Normalisation is SQuAD's: lower-case, drop punctuation, drop the articles a/an/the, collapse
whitespace. Acc asks whether the normalised gold answer occurs inside the normalised
prediction; we match on whole words (" gold " inside " prediction ") so that the gold "no"
does not count as found inside "north".
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else [g for g in golds if g is not None]


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        # SQuAD v2 convention: two empty answers agree, one empty answer scores nothing.
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    pred = normalize_answer(prediction)
    return max((float(pred == normalize_answer(g)) for g in _golds(golds)), default=0.0)


def f1_score(prediction: str, golds: str | Iterable[str]) -> float:
    return max((_f1(prediction, g) for g in _golds(golds)), default=0.0)


def accuracy(prediction: str, golds: str | Iterable[str]) -> float:
    pred = f" {normalize_answer(prediction)} "
    scores = []
    for gold in _golds(golds):
        norm = normalize_answer(gold)
        scores.append(float(bool(norm) and f" {norm} " in pred))
    return max(scores, default=0.0)


def score_answer(prediction: str, golds: str | Iterable[str]) -> dict[str, float]:
    """{"em", "f1", "acc"} of one prediction against every gold alias (the best alias wins)."""
    return {
        "em": exact_match(prediction, golds),
        "f1": f1_score(prediction, golds),
        "acc": accuracy(prediction, golds),
    }


def clean_number(raw: str) -> str | None:
    """A number as a canonical string ("1,200." -> "1200", "2.50" -> "2.5"), or None if it is not one."""
    raw = raw.replace(",", "").rstrip(".")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)
