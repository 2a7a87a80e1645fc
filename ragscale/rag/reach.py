"""How far retrieval on the question alone reaches into a multi-hop question's evidence.

For each hop count: where each supporting passage ranks when the whole question is the query,
and for how many questions the gold answer's text appears in the top k passages. This is the
ceiling on what more documents (k) can buy a one-call strategy: a passage the question never
retrieves can only be reached by a follow-up query (IterDRAG). ``ragscale bench demo-reach``.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ragscale.datasets.types import Question

RANK_BANDS = ("1", "2-3", "4-10", ">10")


def _band(rank: int | None) -> str:
    if rank is None or rank > 10:
        return ">10"
    return "1" if rank == 1 else "2-3" if rank <= 3 else "4-10"


def retrieval_reach(questions: Sequence[Question], retriever, ks: Sequence[int] = (1, 3, 5, 10)) -> dict:
    """{hops: {"questions", "passage_ranks": [{band: count} per supporting passage],
    "answer_in_top_k": {k: count}, "all_passages_in_top_k": {k: count}}}."""
    depth = max(10, *ks)
    results = retriever.search_batch([q.question for q in questions], depth)
    out: dict = {}
    for q, docs in zip(questions, results):
        titles = [d.title for d in docs]
        entry = out.setdefault(str(q.hops), {"questions": 0, "passage_ranks": [], "answer_in_top_k": Counter(),
                                             "all_passages_in_top_k": Counter()})
        entry["questions"] += 1
        for position, title in enumerate(q.supporting_titles):
            while len(entry["passage_ranks"]) <= position:
                entry["passage_ranks"].append(Counter())
            entry["passage_ranks"][position][_band(titles.index(title) + 1 if title in titles else None)] += 1
        answers = [a.lower() for a in q.answers]
        for k in ks:
            text = " ".join(d.text for d in docs[:k]).lower()
            entry["answer_in_top_k"][str(k)] += any(a in text for a in answers)
            entry["all_passages_in_top_k"][str(k)] += all(t in titles[:k] for t in q.supporting_titles)
    for entry in out.values():
        entry["passage_ranks"] = [{band: ranks.get(band, 0) for band in RANK_BANDS} for ranks in entry["passage_ranks"]]
        entry["answer_in_top_k"] = {str(k): entry["answer_in_top_k"].get(str(k), 0) for k in ks}
        entry["all_passages_in_top_k"] = {str(k): entry["all_passages_in_top_k"].get(str(k), 0) for k in ks}
    return dict(sorted(out.items()))
