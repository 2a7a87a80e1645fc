"""Datasets: loaders for real multi-hop QA files, the generated demo set, and the test/pool split.

``Dataset.questions`` is what a run is scored on; ``Dataset.pool`` holds training questions that
demonstrations are drawn from (never scored). The demo dataset ships both; for a file that has
no split, ``split_pool`` moves a deterministic sample of questions into the pool.
"""

from __future__ import annotations

import random

from ragscale.datasets.demo import demo_dataset
from ragscale.datasets.loaders import (
    DATASET_FORMATS, MAX_DOC_TOKENS, detect_format, load_dataset, load_gsm8k, truncate_words,
)
from ragscale.datasets.types import Dataset, Document, Question


def split_pool(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """A copy of ``dataset`` whose pool holds ``size`` questions taken out of its test questions.

    A dataset that already has a pool (the demo) comes back unchanged. The choice depends only
    on the seed and the question order, so every run of a sweep sees the same split.
    """
    if dataset.pool or size <= 0:
        return dataset
    size = min(size, max(len(dataset.questions) - 1, 0))
    chosen = set(random.Random(seed).sample(range(len(dataset.questions)), size))
    return Dataset(
        name=dataset.name,
        questions=[q for i, q in enumerate(dataset.questions) if i not in chosen],
        corpus=dataset.corpus,
        source=dataset.source,
        pool=[q for i, q in enumerate(dataset.questions) if i in chosen],
    )


__all__ = [
    "DATASET_FORMATS", "MAX_DOC_TOKENS", "Dataset", "Document", "Question", "demo_dataset",
    "detect_format", "load_dataset", "load_gsm8k", "split_pool", "truncate_words",
]
