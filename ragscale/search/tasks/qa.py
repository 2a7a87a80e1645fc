"""Multi-hop QA as tree search: one step = one IterDRAG iteration (Yue et al. 2025).

The model writes a follow-up sub-query, k documents are retrieved for it and appended to the
trajectory, and the model writes an intermediate answer. A leaf states
``So the final answer is:``. This is tree search over retrieval-augmented reasoning.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from ragscale.datasets.types import Dataset, Document, Question
from ragscale.engines.base import Engine, Generation
from ragscale.errors import UserError
from ragscale.rag import prompts as selfask
from ragscale.search.tasks.base import Step, Task, sample_frontier, step_ids, step_params, usage_record
from ragscale.search.verifiers import Trajectory

Retrieve = Callable[[str, int], list[Document]]
_FINAL_IN_LINE = re.compile(r"so\s+the\s+final\s+answer\s+is\s*:?", re.IGNORECASE)


def format_demos(dataset: Dataset | None, exclude: str | None = None, m: int = 1) -> list[selfask.Example]:
    """Up to ``m`` self-ask demonstrations from gold decompositions (the pool first), without their
    documents: they show a small model the step format at the cost of a short shared prefix."""
    if dataset is None:
        return []
    out = []
    for q in list(dataset.pool) + list(dataset.questions):
        if len(out) > m:  # one spare: ``QATask.root`` drops a demonstration that is the test question
            break
        if q.decomposition and q.qid != exclude and q.answers:
            out.append(selfask.Example(q.question, [], q.answers[0], steps=list(q.decomposition)))
    return out


def retriever_for(dataset: Dataset, progress=None) -> Retrieve:
    """``retrieve(query, k) -> documents`` over the dataset's pooled corpus (the RAG retriever)."""
    from ragscale.retrieval import build_retriever

    return build_retriever(dataset, progress=progress).search


class QATask(Task):
    """Tree search over IterDRAG.

    A step is ``Follow up: <q>`` + the k documents retrieved for q (ones already on the path are
    skipped) + ``Intermediate answer: <a>``; the model may close the step with
    ``So the final answer is: <x>``, which makes it a leaf. At ``max_depth`` the step is forced:
    ``So the final answer is:`` is written for the model, as IterDRAG forces an answer after its
    last iteration. Sub-queries are sampled (the tree's diversity); intermediate answers are
    greedy, since they should only read the evidence.
    """

    name = "qa"
    # IterDRAG stops after at most 5 iterations; sub-queries and short answers fit in 48 tokens.
    default_max_depth = 3
    default_step_tokens = 48

    def __init__(self, retrieve: Retrieve, k: int = 2, doc_words: int = 80,
                 demos: Sequence[selfask.Example] = (), num_demos: int | None = None):
        if k < 1:
            raise UserError("k (documents per step) must be >= 1")
        self.retrieve = retrieve
        self.k = k
        self.doc_words = doc_words
        self.demos = list(demos)  # may hold a spare, in case one of them is the test question
        self.num_demos = len(self.demos) if num_demos is None else num_demos
        self.documents: dict[str, Document] = {}  # every document retrieved so far, by id

    def _fetch(self, query: str, exclude: Sequence[str] = ()) -> list[Document]:
        # Ask for more than k so that documents already on the path can be skipped.
        docs = [d for d in self.retrieve(query, self.k + len(exclude)) if d.doc_id not in set(exclude)][: self.k]
        for d in docs:
            self.documents[d.doc_id] = d
        return docs

    def _short(self, doc: Document) -> Document:
        words = doc.text.split()
        text = doc.text if len(words) <= self.doc_words else " ".join(words[: self.doc_words]) + " ..."
        return Document(doc.doc_id, doc.title, text)

    def root(self, engine: Engine, question: Question) -> tuple[list[int], str, dict]:
        docs = self._fetch(question.question)
        test = selfask.Example(question.question, [self._short(d) for d in docs])
        demos = [d for d in self.demos if d.question != question.question][: self.num_demos]
        text = selfask.render_prompt(engine.tokenizer, demos, test, iterative=True)
        return engine.encode(text), text, {"doc_ids": [d.doc_id for d in docs], "question": question.question}

    def expand(self, engine, question, branches, counts, config):
        steps: list[list[Step]] = [[] for _ in branches]
        last = [b.depth + 1 >= config.max_depth for b in branches]
        enc = engine.encode
        follow_ids, final_ids = enc(selfask.FOLLOW_UP), enc(selfask.FINAL)
        seed = config.seed * 1000 + min((b.depth for b in branches), default=0)
        sampled = step_params(config, stop=("\n",), seed=seed)
        prompts = [b.prompt_ids + (final_ids if is_last else follow_ids) for b, is_last in zip(branches, last)]
        first = sample_frontier(engine, prompts, counts, sampled)

        # Forced final answers are complete steps; follow-ups still need documents and an answer.
        pending: list[tuple[int, Generation, list[Document], list[int]]] = []
        for i, (branch, gens) in enumerate(zip(branches, first)):
            for gen in gens:
                if last[i]:
                    answer = selfask.clean_answer(gen.text)
                    ids = final_ids + step_ids(engine, gen, "\n")
                    steps[i].append(Step(f"{selfask.FINAL} {gen.text.strip()}", ids, True, answer=answer,
                                         requests=[usage_record(gen, "final", branch.depth)]))
                    continue
                if _FINAL_IN_LINE.search(gen.text):  # the model chose to answer instead of asking
                    answer = selfask.clean_answer(gen.text[_FINAL_IN_LINE.search(gen.text).end():])
                    steps[i].append(Step(f"{selfask.FOLLOW_UP} {gen.text.strip()}",
                                         follow_ids + step_ids(engine, gen, "\n"), True, answer=answer,
                                         requests=[usage_record(gen, "final", branch.depth)]))
                    continue
                query = selfask.parse_follow_up(gen.text, fallback=question.question)
                docs = self._fetch(query, exclude=branch.doc_ids)
                shown = "\n".join(f"Document [{d.doc_id}] {self._short(d).render()}" for d in docs)
                between = enc("\n" + (f"Documents:\n{shown}\n" if docs else "") + selfask.INTERMEDIATE)
                pending.append((i, gen, docs, follow_ids + step_ids(engine, gen) + between))

        if pending:
            # One intermediate answer, optionally followed by the final-answer line; a repeated
            # marker or a blank line ends it (small models otherwise repeat lines up to the cap).
            stops = ("\n" + selfask.FOLLOW_UP, "\n" + selfask.INTERMEDIATE, "\n\n")
            greedy = step_params(config, stop=stops, temperature=0.0, seed=seed)
            answers = engine.generate([branches[i].prompt_ids + ids for i, _, _, ids in pending], greedy)
            for (i, query_gen, docs, ids), gen in zip(pending, answers):
                intermediate, final = selfask.parse_intermediate(gen.text)
                text = (f"{selfask.FOLLOW_UP} {query_gen.text.strip()}\n"
                        + "".join(f"[{d.title}] " for d in docs) + "\n"
                        + f"{selfask.INTERMEDIATE} {gen.text.strip()}")
                steps[i].append(Step(
                    text, ids + step_ids(engine, gen, "\n"), finished=final is not None, answer=final,
                    sub_query=selfask.parse_follow_up(query_gen.text, fallback=question.question),
                    intermediate=intermediate, doc_ids=[d.doc_id for d in docs],
                    requests=[usage_record(query_gen, "follow_up", branches[i].depth),
                              usage_record(gen, "intermediate", branches[i].depth)],
                ))
        return steps

    def trajectory(self, question, branch, step):
        if step.finished:
            evidence_ids = list(branch.doc_ids) + step.doc_ids  # a final answer answers to everything read
        else:
            evidence_ids = step.doc_ids
        return Trajectory(
            question=question.question,
            prompt_ids=branch.prompt_ids + step.token_ids,
            steps=list(branch.steps) + [step.text],
            evidence=[self.documents[d].render() for d in evidence_ids if d in self.documents],
            intermediate=step.intermediate,
            answer=step.answer,
        )

    def grade(self, question, answer):
        from ragscale.rag.metrics import score_answer

        scores = score_answer(answer or "", question.answers)
        return {**scores, "correct": scores["acc"]}

    def normalize(self, answer):
        from ragscale.rag.metrics import normalize_answer

        return normalize_answer(answer)
