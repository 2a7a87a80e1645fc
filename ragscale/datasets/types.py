"""Plain records shared by loaders, retrieval, RAG strategies and tree search."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str

    def render(self) -> str:
        return f"Title: {self.title}\n{self.text}" if self.title else self.text


@dataclass
class Question:
    qid: str
    question: str
    answers: list[str]  # gold answer first, then aliases
    dataset: str = ""
    hops: int | None = None
    supporting_titles: list[str] = field(default_factory=list)
    # Gold decomposition (MuSiQue) as (sub-question, sub-answer) pairs: demonstrations use it.
    decomposition: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dataset:
    name: str
    questions: list[Question]
    corpus: list[Document]  # pooled, de-duplicated paragraphs of every question
    source: str = ""  # path, or "demo"
    # Training questions for demonstrations, never among ``questions`` (the test set). The demo
    # dataset ships one; for files without a split, ragscale.datasets.split_pool makes one.
    pool: list[Question] = field(default_factory=list)
