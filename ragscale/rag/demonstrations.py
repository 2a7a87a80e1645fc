"""In-context demonstrations from a pool of training questions kept apart from the test questions.

DRAG demonstrations are (documents, question, gold answer), each with its own k retrieved
documents. IterDRAG demonstrations are self-ask chains: we run IterDRAG on pool questions and
keep the chains that reached the gold answer, as Yue et al. 2025 do. Chains are cached on disk
(they cost model calls). When too few chains come out right — common with a small model — the
rest are built from the gold decomposition (MuSiQue and the demo set have one) or, failing
that, a one-step chain that asks the question itself; every demonstration records its source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ragscale.config import cache_dir
from ragscale.datasets.types import Dataset, Document, Question
from ragscale.rag.prompts import Example

CHAIN_CACHE_VERSION = 1


def interleave_by_hops(questions: Sequence[Question]) -> list[Question]:
    """1-hop, 2-hop, 3-hop, 1-hop, ... so that the first N questions cover every hop count
    (the demo set lists its questions grouped by hops)."""
    groups: dict = {}
    for q in questions:
        groups.setdefault(q.hops, []).append(q)
    lanes = [groups[h] for h in sorted(groups, key=lambda h: (h is None, h or 0))]
    return [lane[i] for i in range(max(map(len, lanes), default=0)) for lane in lanes if i < len(lane)]


def split_questions(dataset: Dataset, limit: int | None = None, pool_size: int = 8) -> tuple[list[Question], list[Question]]:
    """(test questions, demonstration pool), disjoint, both in hop-interleaved order.

    A dataset that ships a training pool (the demo set) uses it; for a file without one,
    ``ragscale.datasets.split_pool`` moves a fixed, seeded sample of questions into the pool."""
    if not dataset.pool and pool_size:
        from ragscale.datasets import split_pool

        if len(dataset.questions) < 2:
            from ragscale.errors import DatasetError

            raise DatasetError(f"{dataset.name}: needs at least 2 questions (tests plus a demonstration pool)")
        dataset = split_pool(dataset, pool_size)
    tests = interleave_by_hops(dataset.questions)
    return (tests[:limit] if limit else tests), interleave_by_hops(dataset.pool)[:pool_size]


@dataclass
class Chain:
    qid: str
    steps: list[tuple[str, str]]
    answer: str
    source: str  # "generated", "gold-decomposition" or "one-step"


@dataclass
class DemoPool:
    """The m demonstrations of every configuration are the first m of ``questions``: a run with
    m = 2 starts with the same prompt as one with m = 1, which the prefix cache reuses."""

    questions: list[Question]
    chains: dict[str, Chain] = field(default_factory=dict)
    chain_note: str = ""  # how the IterDRAG chains were obtained, for reports

    def _ordered(self, m: int, iterative: bool, hops: int | None = None) -> list[Question]:
        """The m demonstrations; with ``hops`` (the test question's hop count), hop-aware: pool
        questions with as many hops come first, then the nearest counts, each group in pool order.

        Why: a small model copies the shape of its demonstration. A 1-hop demonstration before a
        2-hop question teaches it to answer from the first document it sees; a 3-hop chain
        before a 3-hop question shows the three follow-ups it has to ask."""
        if m > len(self.questions):
            from ragscale.errors import UserError

            raise UserError(f"m = {m} needs {m} demonstrations but the pool holds {len(self.questions)}")
        distance = lambda q: abs(q.hops - hops) if hops is not None and q.hops is not None else 0
        if not iterative:
            return sorted(self.questions, key=distance)[:m]  # stable: pool order within a distance
        # Then generated (correct) chains first: they are the paper's demonstrations.
        rank = {"generated": 0, "gold-decomposition": 1, "one-step": 2}
        ordered = sorted(self.questions, key=lambda q: (distance(q), rank.get(self._chain(q).source, 3)))
        return ordered[:m]

    def _chain(self, question: Question) -> Chain:
        return self.chains.get(question.qid) or fallback_chain(question)

    def sources(self, m: int, iterative: bool, hops: int | None = None) -> list[str]:
        chosen = self._ordered(m, iterative, hops)
        if not iterative:
            return [f"gold-answer ({q.hops}-hop)" if q.hops else "gold-answer" for q in chosen]
        return [self._chain(q).source for q in chosen]

    def examples(self, k: int, m: int, iterative: bool,
                 retrieve: Callable[[Sequence[str], int], list[list[Document]]], hops: int | None = None) -> list[Example]:
        chosen = self._ordered(m, iterative, hops)
        docs = retrieve([q.question for q in chosen], k)
        if not iterative:
            return [Example(q.question, d, q.answers[0]) for q, d in zip(chosen, docs)]
        examples = []
        for q, first in zip(chosen, docs):
            chain = self._chain(q)
            documents = list(first)
            seen = {doc.doc_id for doc in documents}
            # Each follow-up brings its own k documents, accumulated as at test time.
            for sub_docs in retrieve([s for s, _ in chain.steps], k) if chain.steps else []:
                for doc in sub_docs:
                    if doc.doc_id not in seen:
                        documents.append(doc)
                        seen.add(doc.doc_id)
            examples.append(Example(q.question, documents, chain.answer, [tuple(s) for s in chain.steps]))
        return examples


def fallback_chain(question: Question) -> Chain:
    if question.decomposition:
        return Chain(question.qid, [tuple(s) for s in question.decomposition], question.answers[0], "gold-decomposition")
    return Chain(question.qid, [(question.question, question.answers[0])], question.answers[0], "one-step")


def _chain_cache_path(dataset: Dataset, pool: Sequence[Question], model: str, k: int, n: int) -> Path:
    # The corpus by content, not size: chains made on an older version of a corpus with as many
    # passages (the demo world gained back-links without gaining passages) must not be reused.
    corpus = hashlib.sha256(json.dumps([[d.doc_id, d.text] for d in dataset.corpus]).encode()).hexdigest()
    ident = json.dumps([CHAIN_CACHE_VERSION, dataset.name, dataset.source, corpus,
                        [q.qid for q in pool], model, k, n])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_dir() / "iterdrag_chains" / f"{dataset.name}-{digest}.json"


def build_demo_pool(dataset: Dataset, pool: Sequence[Question], runner=None, chain_k: int = 2, chain_n: int = 3,
                    generate_chains: bool = True, progress=None) -> DemoPool:
    """A ``DemoPool``; with a runner, IterDRAG chains are generated on the pool (or read from cache).

    Chains are generated zero-shot (m = 0) with ``chain_k`` documents per retrieval and at most
    ``chain_n`` iterations; a chain counts as correct when its answer scores Acc = 1.
    """
    demo = DemoPool(list(pool))
    if runner is None or not generate_chains or not pool:
        demo.chain_note = "gold decompositions / one-step chains (no chains generated)"
        return demo
    path = _chain_cache_path(dataset, pool, runner.engine.info.model, chain_k, chain_n)
    if path.exists():
        saved = json.loads(path.read_text())
        demo.chains = {c["qid"]: Chain(c["qid"], [tuple(s) for s in c["steps"]], c["answer"], c["source"]) for c in saved["chains"]}
        demo.chain_note = saved["note"] + " (cached)"
        return demo
    from ragscale.rag.strategies import RunConfig

    if progress:
        progress(0, 1, f"generating IterDRAG demonstration chains on {len(pool)} pool questions")
    rows = runner.run(RunConfig("iterdrag", chain_k, 0, chain_n), list(pool))
    correct = [r for r in rows if r["status"] == "ok" and r["acc"] == 1.0 and r["steps"]]
    for row in correct:
        question = next(q for q in pool if q.qid == row["qid"])
        demo.chains[row["qid"]] = Chain(row["qid"], [tuple(s) for s in row["steps"]], question.answers[0], "generated")
    fallback = sorted({fallback_chain(q).source for q in pool if q.qid not in demo.chains})
    demo.chain_note = (f"{len(correct)} of {len(pool)} generated chains correct (k={chain_k}, n<={chain_n}); "
                       f"others from {', '.join(fallback) or '-'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"note": demo.chain_note, "chains": [asdict(c) for c in demo.chains.values()]}, indent=1))
    return demo
