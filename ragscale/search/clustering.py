"""Semantic clusters of candidate steps, for ETS's diversity term (Hooper et al. 2025).

Average-linkage hierarchical clustering on the cosine distance of the step embeddings, cut at
a distance threshold (0.05 in the paper): steps in one cluster say nearly the same thing, so
keeping one of them covers the cluster.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist


def cluster_embeddings(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster label (0..K-1, numbered in order of first appearance) for each row."""
    x = np.asarray(embeddings, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {x.shape}")
    n = len(x)
    if n <= 1:
        return np.zeros(n, dtype=int)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # an all-zero embedding (empty text) has no direction; treat it as unlike everything else
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    distances = np.clip(pdist(x, metric="cosine"), 0.0, 2.0)
    distances = np.nan_to_num(distances, nan=1.0)
    raw = fcluster(linkage(distances, method="average"), t=threshold, criterion="distance")
    relabel: dict[int, int] = {}
    return np.array([relabel.setdefault(int(r), len(relabel)) for r in raw], dtype=int)


def cluster_texts(texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray], threshold: float) -> np.ndarray:
    """Embed ``texts`` with ``embed`` and cluster them; identical texts always share a cluster."""
    texts = list(texts)
    if len(texts) <= 1:
        return np.zeros(len(texts), dtype=int)
    unique = list(dict.fromkeys(texts))  # embed each distinct text once
    emb = np.asarray(embed(unique), dtype=float)
    if emb.shape[0] != len(unique):
        raise ValueError(f"embed returned {emb.shape[0]} rows for {len(unique)} texts")
    labels = cluster_embeddings(emb, threshold)
    by_text = dict(zip(unique, labels))
    raw = [int(by_text[t]) for t in texts]
    relabel: dict[int, int] = {}
    return np.array([relabel.setdefault(r, len(relabel)) for r in raw], dtype=int)
