"""Read multi-hop QA files into a ``Dataset``: questions plus one pooled retrieval corpus.

Four shapes are recognised from their fields (see ``DATASET_FORMATS``); a file is a JSON list
or JSON Lines. Every paragraph of every question goes into one corpus, de-duplicated by
(title, text), so retrieval runs over a realistic haystack instead of each question's own ten
or twenty paragraphs. Documents are cut to 1,024 whitespace tokens as Yue et al. 2025 do.
Anything unexpected raises ``DatasetError`` naming the file, the record and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from ragscale.config import SHARED_DATASETS_DIR
from ragscale.datasets.types import Dataset, Document, Question
from ragscale.deploy import read_file_capped
from ragscale.errors import DatasetError, UserError

MAX_DOC_TOKENS = 1024

# name -> (what identifies it, description shown to users)
DATASET_FORMATS: dict[str, str] = {
    "hotpotqa": "official HotpotQA JSON: _id, question, answer, supporting_facts, context [[title, [sentences]]]",
    "2wikimultihopqa": "official 2WikiMultiHopQA JSON: like HotpotQA plus evidences [[subject, relation, object]]",
    "musique": "official MuSiQue JSON or JSONL: id, question, answer, answer_aliases, paragraphs "
    "[{title, paragraph_text, is_supporting}], question_decomposition",
    "flashrag": "FlashRAG JSONL: id, question, golden_answers (paragraphs from metadata.context if present)",
}


def truncate_words(text: str, limit: int = MAX_DOC_TOKENS) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit])


class _Records:
    """The records of one file and where each came from, for error messages."""

    def __init__(self, path: Path, records: list[Any]):
        self.path = path
        self.records = records

    def fail(self, index: int, message: str) -> DatasetError:
        return DatasetError(f"{self.path.name}: record {index}: {message}")


def _too_deep(path: Path) -> DatasetError:
    # json.loads recurses once per level: 100,000 "[" end in a RecursionError.
    return DatasetError(f"{path.name}: JSON nested too deeply to be a dataset")


def _read_records(path: Path) -> list[Any]:
    # Capped, regular files only, checked before reading: a FIFO or /dev/zero must never hang
    # or exhaust a shared server (ragscale.deploy).
    try:
        data = read_file_capped(path)
    except UserError as exc:
        raise DatasetError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    stripped = text.strip()
    if not stripped:
        raise DatasetError(f"{path.name}: the file is empty")
    if stripped[0] == "[":
        try:
            data = json.loads(stripped)
        except RecursionError:
            raise _too_deep(path) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path.name}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
                "is the file truncated?"
            ) from exc
        return data
    # JSON Lines (or a single JSON object, which is one line of it).
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except RecursionError:
            raise _too_deep(path) from None
        except json.JSONDecodeError as exc:
            if lineno == 1 and stripped[0] == "{":
                try:  # one pretty-printed object, or a wrapper such as {"data": [...]}
                    whole = json.loads(stripped)
                except RecursionError:
                    raise _too_deep(path) from None
                except json.JSONDecodeError:
                    pass
                else:
                    if isinstance(whole, dict) and isinstance(whole.get("data"), list):
                        return whole["data"]
                    return [whole]
            raise DatasetError(
                f"{path.name}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}); "
                "expected a JSON list or one JSON object per line"
            ) from exc
    if len(records) == 1 and isinstance(records[0], dict) and isinstance(records[0].get("data"), list):
        return records[0]["data"]
    return records


def detect_format(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if "paragraphs" in keys and "question" in keys:
        return "musique"
    if "context" in keys and "question" in keys and "answer" in keys:
        return "2wikimultihopqa" if "evidences" in keys else "hotpotqa"
    if "golden_answers" in keys and "question" in keys:
        return "flashrag"
    return None


def _require(records: _Records, index: int, record: Any, fields: tuple[str, ...], fmt: str) -> None:
    if not isinstance(record, dict):
        raise records.fail(index, f"expected a JSON object, got {type(record).__name__}")
    for name in fields:
        if name not in record:
            raise records.fail(index, f"missing field '{name}' ({DATASET_FORMATS[fmt]})")


def _as_text(value: Any) -> str:
    """Text fields may hold numbers (an answer such as 1998); anything else is malformed."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected text, got {type(value).__name__}")


class _Corpus:
    """Pools paragraphs, keeping the first copy of each (title, text)."""

    def __init__(self) -> None:
        self.documents: list[Document] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, title: str, text: str) -> None:
        title, text = title.strip(), text.strip()
        if not text or (title, text) in self._seen:
            return
        self._seen.add((title, text))
        self.documents.append(Document(doc_id=f"p{len(self.documents)}", title=title, text=truncate_words(text)))


def _context_paragraphs(context: Any) -> list[tuple[str, str]]:
    """HotpotQA/2Wiki context: [[title, [sentences]]], or the Hugging Face {title: [], sentences: []}."""
    if isinstance(context, dict) and "title" in context and "sentences" in context:
        context = list(zip(context["title"], context["sentences"]))
    paragraphs = []
    for item in context:
        title, sentences = item[0], item[1]
        body = sentences if isinstance(sentences, str) else "".join(sentences)
        paragraphs.append((_as_text(title), body))
    return paragraphs


def _supporting_titles(facts: Any) -> list[str]:
    if isinstance(facts, dict):  # Hugging Face layout {title: [...], sent_id: [...]}
        facts = [[t] for t in facts.get("title", [])]
    titles: list[str] = []
    for fact in facts or []:
        if fact and fact[0] not in titles:
            titles.append(fact[0])
    return titles


def _parse_hotpot_like(records: _Records, fmt: str, corpus: _Corpus) -> list[Question]:
    questions = []
    for i, rec in enumerate(records.records):
        _require(records, i, rec, ("question", "answer", "context"), fmt)
        try:
            paragraphs = _context_paragraphs(rec["context"])
        except (TypeError, IndexError, KeyError) as exc:
            raise records.fail(i, f"field 'context' is not [[title, [sentences]], ...] ({exc})") from exc
        for title, text in paragraphs:
            corpus.add(title, text)
        titles = _supporting_titles(rec.get("supporting_facts"))
        qid = rec.get("_id", rec.get("id", f"{records.path.stem}-{i}"))
        try:
            answer = _as_text(rec["answer"])
            question = _as_text(rec["question"])
        except TypeError as exc:
            raise records.fail(i, f"field 'question' or 'answer': {exc}") from exc
        questions.append(
            Question(qid=str(qid), question=question, answers=[answer], dataset=fmt,
                     hops=len(titles) or None, supporting_titles=titles)
        )
    return questions


def _readable_subquestion(text: str, answers: list[str]) -> str:
    """MuSiQue writes '#2' for the answer of step 2 and 'Entity >> relation' for KB hops.

    IterDRAG demonstrations show these as follow-up questions, so we spell both out.
    """
    text = re.sub(r"#(\d+)", lambda m: answers[int(m.group(1)) - 1] if 0 < int(m.group(1)) <= len(answers) else m.group(0), text)
    if ">>" in text:
        subject, _, relation = text.partition(">>")
        text = f"{relation.strip()} of {subject.strip()}"
    return text.strip()


def _parse_musique(records: _Records, fmt: str, corpus: _Corpus) -> list[Question]:
    questions = []
    for i, rec in enumerate(records.records):
        _require(records, i, rec, ("id", "question", "answer", "paragraphs"), fmt)
        paragraphs = rec["paragraphs"]
        if not isinstance(paragraphs, list):
            raise records.fail(i, "field 'paragraphs' is not a list")
        for j, para in enumerate(paragraphs):
            if not isinstance(para, dict) or "paragraph_text" not in para:
                raise records.fail(i, f"paragraph {j} is missing field 'paragraph_text'")
            corpus.add(str(para.get("title", "")), para["paragraph_text"])
        steps = rec.get("question_decomposition") or []
        sub_answers: list[str] = []
        decomposition: list[tuple[str, str]] = []
        titles: list[str] = []
        by_idx = {p.get("idx", j): p for j, p in enumerate(paragraphs)}
        for j, step in enumerate(steps):
            if not isinstance(step, dict) or "question" not in step or "answer" not in step:
                raise records.fail(i, f"question_decomposition[{j}] needs 'question' and 'answer'")
            sub_answers.append(str(step["answer"]))
            decomposition.append((_readable_subquestion(str(step["question"]), sub_answers), str(step["answer"])))
            support = by_idx.get(step.get("paragraph_support_idx"))
            if support is not None and support.get("title") and support["title"] not in titles:
                titles.append(support["title"])
        if not titles:
            titles = [p.get("title", "") for p in paragraphs if p.get("is_supporting")]
        aliases = [a for a in rec.get("answer_aliases") or [] if a and a != rec["answer"]]
        questions.append(
            Question(qid=str(rec["id"]), question=str(rec["question"]), answers=[str(rec["answer"]), *aliases],
                     dataset=fmt, hops=len(steps) or None, supporting_titles=titles, decomposition=decomposition)
        )
    return questions


def _parse_flashrag(records: _Records, fmt: str, corpus: _Corpus) -> list[Question]:
    questions = []
    for i, rec in enumerate(records.records):
        _require(records, i, rec, ("id", "question", "golden_answers"), fmt)
        answers = rec["golden_answers"]
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers:
            raise records.fail(i, "field 'golden_answers' must be a non-empty list of strings")
        metadata = rec.get("metadata") or {}
        titles: list[str] = []
        if isinstance(metadata, dict):
            # FlashRAG keeps the source dataset's paragraphs under metadata when it has them.
            try:
                if "context" in metadata:
                    for title, text in _context_paragraphs(metadata["context"]):
                        corpus.add(title, text)
                for para in metadata.get("paragraphs") or []:
                    corpus.add(str(para.get("title", "")), para.get("paragraph_text", ""))
            except (TypeError, IndexError, KeyError, AttributeError) as exc:
                raise records.fail(i, f"metadata paragraphs are malformed ({exc})") from exc
            titles = _supporting_titles(metadata.get("supporting_facts"))
        questions.append(
            Question(qid=str(rec["id"]), question=str(rec["question"]), answers=[str(a) for a in answers],
                     dataset=fmt, hops=len(titles) or None, supporting_titles=titles)
        )
    return questions


_PARSERS: dict[str, Callable[[_Records, str, _Corpus], list[Question]]] = {
    "hotpotqa": _parse_hotpot_like,
    "2wikimultihopqa": _parse_hotpot_like,
    "musique": _parse_musique,
    "flashrag": _parse_flashrag,
}


def _resolve(path_or_name: str | Path) -> Path:
    path = Path(path_or_name).expanduser()
    if path.exists() or path.is_symlink():
        return path
    # Bare names of the shared samples ("hotpotqa_sample70") are accepted for convenience.
    for candidate in (SHARED_DATASETS_DIR / str(path_or_name), SHARED_DATASETS_DIR / f"{path_or_name}.json"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"no such dataset file: {path_or_name} (give a path, or 'demo')")


def load_file(path: Path) -> Dataset:
    if path.is_dir():
        raise DatasetError(f"{path} is a directory; give a dataset file")
    records = _Records(path, _read_records(path))
    if not isinstance(records.records, list):
        raise DatasetError(f"{path.name}: expected a JSON list of question records")
    if not records.records:
        raise DatasetError(f"{path.name}: contains no question records")
    fmt = detect_format(records.records[0])
    if fmt is None:
        first = records.records[0]
        keys = sorted(first)[:12] if isinstance(first, dict) else type(first).__name__
        known = "; ".join(f"{name}: {desc}" for name, desc in DATASET_FORMATS.items())
        raise DatasetError(f"{path.name}: unknown format (record 0 has {keys}); known formats are {known}")
    corpus = _Corpus()
    questions = _PARSERS[fmt](records, fmt, corpus)
    return Dataset(name=path.stem, questions=questions, corpus=corpus.documents, source=str(path))


def load_dataset(path_or_name: str | Path) -> Dataset:
    """``"demo"`` -> the generated demo dataset; otherwise a HotpotQA / MuSiQue / 2Wiki / FlashRAG file."""
    if str(path_or_name) == "demo":
        from ragscale.datasets.demo import demo_dataset

        return demo_dataset()
    return load_file(_resolve(path_or_name))


def load_gsm8k(path: str | Path) -> Dataset:
    """GSM8K-style JSONL (or a JSON list): ``question`` and ``answer`` ending in ``#### <number>``."""
    from ragscale.rag.metrics import clean_number

    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"no such file: {path}")
    records = _read_records(path)
    questions = []
    for i, rec in enumerate(records if isinstance(records, list) else [records]):
        if not isinstance(rec, dict) or "question" not in rec or "answer" not in rec:
            raise DatasetError(f"{path.name}: record {i} needs 'question' and 'answer'")
        answer = str(rec["answer"])
        if "####" not in answer:
            raise DatasetError(f"{path.name}: record {i}: the answer has no '#### <number>'")
        gold = clean_number(answer.split("####")[-1].strip())
        if gold is None:
            raise DatasetError(f"{path.name}: record {i}: no number after '####'")
        questions.append(Question(qid=str(rec.get("id", i)), question=str(rec["question"]), answers=[gold],
                                  dataset=path.stem))
    if not questions:
        raise DatasetError(f"{path.name}: contains no records")
    return Dataset(name=path.stem, questions=questions, corpus=[], source=str(path))
