"""Prompt layouts of Yue et al. 2025 (DRAG, IterDRAG and the baselines) and the self-ask parser.

Layout, shared content first so every question of a run shares one cached prefix:
system instruction, then m demonstrations as earlier chat turns (each with its own documents),
then the test documents and question. Documents are listed in *reverse* rank order: the
best-ranked document sits next to the question.

IterDRAG replies in self-ask form. Every generation starts right after one of the three
markers below, which the caller writes into the assistant turn (``assistant_prefix``), so the
model can only continue the line that the marker begins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ragscale.datasets.types import Document

FOLLOW_UP = "Follow up:"
INTERMEDIATE = "Intermediate answer:"
FINAL = "So the final answer is:"
ANSWER = "Answer:"  # one-call strategies: the reply is forced to start here, then one line

SYSTEM_QA = "Answer the question. Reply with the answer only: a short phrase, no explanation."
SYSTEM_RAG = (
    "Answer the question using the documents. "
    "Reply with the answer only: a short phrase, no explanation."
)
SYSTEM_ITER = (
    "Answer the question using the documents, one step at a time. "
    f"Ask a simpler question on a line starting with '{FOLLOW_UP}', answer it on a line starting with "
    f"'{INTERMEDIATE}', and repeat if needed. End with a line starting with '{FINAL}' followed by "
    "the answer as a short phrase."
)


@dataclass
class Example:
    """One question with its documents (best first) and, for a demonstration, its reply."""

    question: str
    documents: list[Document] = field(default_factory=list)
    answer: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)  # IterDRAG: (sub-query, intermediate answer)


def render_documents(documents: Sequence[Document]) -> str:
    # Reverse rank order: the best document is printed last, right before the question.
    return "\n\n".join(doc.render() for doc in reversed(documents))


def user_turn(example: Example) -> str:
    if example.documents:
        return f"Documents:\n{render_documents(example.documents)}\n\nQuestion: {example.question}"
    return f"Question: {example.question}"


def chain_text(steps: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{FOLLOW_UP} {q}\n{INTERMEDIATE} {a}\n" for q, a in steps)


def system_for(iterative: bool, with_documents: bool) -> str:
    if iterative:
        return SYSTEM_ITER
    return SYSTEM_RAG if with_documents else SYSTEM_QA


def messages_for(demos: Sequence[Example], test: Example, iterative: bool) -> list[dict]:
    """Chat messages: instruction, demonstrations as finished turns, then the test question."""
    with_docs = bool(test.documents) or any(d.documents for d in demos)
    messages = [{"role": "system", "content": system_for(iterative, with_docs)}]
    for demo in demos:
        reply = f"{chain_text(demo.steps)}{FINAL} {demo.answer}" if iterative else f"{ANSWER} {demo.answer}"
        messages.append({"role": "user", "content": user_turn(demo)})
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": user_turn(test)})
    return messages


def render_prompt(tokenizer, demos: Sequence[Example], test: Example, iterative: bool, assistant_prefix: str = "") -> str:
    """The exact text sent to the engine: the model's chat template, then the forced reply start."""
    text = tokenizer.apply_chat_template(messages_for(demos, test, iterative), tokenize=False, add_generation_prompt=True)
    return text + assistant_prefix


# ---- parsing model output ---------------------------------------------------------------

_MARKER = re.compile(
    r"^\s*[*_#>\-\s]*(follow[\s-]*up|intermediate\s+answer|so\s+the\s+final\s+answer\s+is)\s*[*_]*\s*:?\s*[*_]*\s*",
    re.IGNORECASE,
)
_ANSWER_LEAD = re.compile(r"^\s*(the\s+)?(final\s+)?answer\s*(is)?\s*[:\-]\s*", re.IGNORECASE)


def clean_answer(text: str) -> str:
    """A short answer from a reply: first line, without marker, 'Answer:' lead, quotes or trailing dot."""
    line = first_line(text)
    line = _MARKER.sub("", line, count=1)
    line = _ANSWER_LEAD.sub("", line, count=1)
    previous = None
    while line != previous:  # peel markup and a final full stop in any order: **Paris**.
        previous = line
        line = line.strip().strip("*_`\"'").strip()
        if line.endswith(".") and not re.search(r"\b[A-Z]\.$", line):  # keep initials like "J.R.R."
            line = line[:-1].rstrip()
    return line


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_follow_up(generated: str, fallback: str) -> str:
    """The sub-query the model wrote after ``Follow up:`` (the question itself if it wrote none)."""
    text = generated
    # The model sometimes runs on into the intermediate answer on the same line.
    cut = re.search(r"intermediate\s+answer\s*:", text, re.IGNORECASE)
    if cut:
        text = text[: cut.start()]
    line = _MARKER.sub("", first_line(text), count=1).strip().strip("*_`\"").strip()
    return line or fallback


def parse_intermediate(generated: str) -> tuple[str, str | None]:
    """(intermediate answer, final answer or None) from the text after ``Intermediate answer:``.

    The model may decide to stop asking and write ``So the final answer is: X`` on the next line.
    """
    final = None
    match = re.search(r"so\s+the\s+final\s+answer\s+is\s*:?", generated, re.IGNORECASE)
    before = generated
    if match:
        final = clean_answer(generated[match.end():])
        before = generated[: match.start()]
    answer = clean_answer(before)
    if not answer and final:
        answer = final
    return answer, final  # final is "" when the marker came but the output cap cut the answer
