"""Loaders on the real HotpotQA / MuSiQue samples, on small 2Wiki and FlashRAG files, and on bad files."""

import json
from collections import Counter

import pytest

from ragscale.datasets import DATASET_FORMATS, load_dataset, split_pool
from ragscale.datasets.loaders import MAX_DOC_TOKENS
from ragscale.errors import DatasetError


def test_hotpotqa_sample(hotpotqa_path):
    raw = json.loads(hotpotqa_path.read_text())
    data = load_dataset(hotpotqa_path)
    assert data.name == "hotpotqa_sample70" and len(data.questions) == 70
    q = data.questions[0]
    assert q.qid == raw[0]["_id"] and q.answers == [raw[0]["answer"]] and q.dataset == "hotpotqa"
    assert q.hops == 2 and len(q.supporting_titles) == 2
    # Corpus = every paragraph pooled, one copy per (title, text).
    paragraphs = {(t, "".join(s).strip()) for r in raw for t, s in r["context"]}
    assert len(data.corpus) == len(paragraphs)
    assert len({(d.title, d.text) for d in data.corpus}) == len(data.corpus)
    assert len({d.doc_id for d in data.corpus}) == len(data.corpus)
    titles = {d.title for d in data.corpus}
    assert all(t in titles for q in data.questions for t in q.supporting_titles)


def test_musique_sample(musique_path):
    raw = json.loads(musique_path.read_text())
    data = load_dataset(musique_path)
    assert len(data.questions) == 70 and all(q.dataset == "musique" for q in data.questions)
    assert Counter(q.hops for q in data.questions) == Counter(len(r["question_decomposition"]) for r in raw)
    paragraphs = {(p["title"], p["paragraph_text"].strip()) for r in raw for p in r["paragraphs"]}
    assert len(data.corpus) == len(paragraphs) < sum(len(r["paragraphs"]) for r in raw)  # shared paragraphs
    # Aliases follow the gold answer.
    with_aliases = [(r, q) for r, q in zip(raw, data.questions) if r["answer_aliases"]]
    assert with_aliases
    for r, q in with_aliases:
        assert q.answers[0] == r["answer"] and set(r["answer_aliases"]) - {r["answer"]} <= set(q.answers[1:])
    # Decomposition: one (sub-question, sub-answer) per step, '#n' references spelled out.
    first = data.questions[0]
    assert [a for _, a in first.decomposition] == [s["answer"] for s in raw[0]["question_decomposition"]]
    assert first.decomposition[1][0] == "What city did Hank Snow live when he died?"
    assert first.decomposition[0][0] == "performer of Hello Love"
    assert not any("#" in sub for q in data.questions for sub, _ in q.decomposition)
    assert first.supporting_titles == ["Hello Love (song)", "Hank Snow", "Tennessee", "Publix"]


def test_documents_truncated_to_1024_whitespace_tokens(tmp_path):
    long_text = " ".join(f"w{i}" for i in range(1500))
    record = {"_id": "x", "question": "q?", "answer": "a", "context": [["Long", [long_text]]],
              "supporting_facts": [["Long", 0]]}
    path = tmp_path / "long.json"
    path.write_text(json.dumps([record]))
    doc = load_dataset(path).corpus[0]
    assert len(doc.text.split()) == MAX_DOC_TOKENS and doc.text.split()[-1] == "w1023"


def test_2wikimultihopqa_shape(tmp_path):
    records = [
        {"_id": "a1", "type": "compositional", "question": "Who is the mother of the director of Film X?",
         "answer": "Ann Lee", "context": [["Film X", ["Film X is a film.", " It was directed by Bo Lee."]],
                                          ["Bo Lee", ["Bo Lee is a director.", " His mother is Ann Lee."]]],
         "supporting_facts": [["Film X", 1], ["Bo Lee", 1]],
         "evidences": [["Film X", "director", "Bo Lee"], ["Bo Lee", "mother", "Ann Lee"]]},
        {"_id": "a2", "type": "comparison", "question": "Which film came first?", "answer": "Film X",
         "context": [["Film X", ["Film X is a film.", " It was directed by Bo Lee."]]],
         "supporting_facts": [["Film X", 0]], "evidences": []},
    ]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(records))
    data = load_dataset(path)
    assert [q.dataset for q in data.questions] == ["2wikimultihopqa"] * 2
    assert data.questions[0].supporting_titles == ["Film X", "Bo Lee"] and data.questions[0].hops == 2
    assert len(data.corpus) == 2  # Film X appears twice, kept once
    assert data.corpus[0].text == "Film X is a film. It was directed by Bo Lee."


def test_flashrag_jsonl(tmp_path):
    lines = [
        {"id": "test_0", "question": "who wrote the glass orchard?", "golden_answers": ["Dorava Kest", "D. Kest"]},
        {"id": "test_1", "question": "where?", "golden_answers": ["Vellmoor"],
         "metadata": {"context": {"title": ["Vellmoor"], "sentences": [["Vellmoor is a city.", " It is old."]]},
                      "supporting_facts": {"title": ["Vellmoor"], "sent_id": [0]}}},
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    data = load_dataset(path)
    assert [q.answers for q in data.questions] == [["Dorava Kest", "D. Kest"], ["Vellmoor"]]
    assert data.questions[1].supporting_titles == ["Vellmoor"]
    assert [d.title for d in data.corpus] == ["Vellmoor"]


def test_musique_jsonl(tmp_path, musique_path):
    raw = json.loads(musique_path.read_text())[:3]
    path = tmp_path / "musique_ans_v1.0_dev.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in raw))
    data = load_dataset(path)
    assert [q.qid for q in data.questions] == [r["id"] for r in raw]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_truncated_json_names_the_file_and_position(tmp_path, hotpotqa_path):
    text = hotpotqa_path.read_text()
    path = _write(tmp_path, "cut.json", text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"cut\.json: not valid JSON at line \d+ column \d+.*truncated"):
        load_dataset(path)


def test_missing_field_names_record_and_field(tmp_path, hotpotqa_path):
    raw = json.loads(hotpotqa_path.read_text())[:5]
    del raw[3]["answer"]
    path = _write(tmp_path, "broken.json", json.dumps(raw))
    with pytest.raises(DatasetError, match=r"broken\.json: record 3: missing field 'answer'"):
        load_dataset(path)


def test_missing_paragraph_text_in_musique(tmp_path, musique_path):
    raw = json.loads(musique_path.read_text())[:2]
    del raw[1]["paragraphs"][4]["paragraph_text"]
    path = _write(tmp_path, "m.json", json.dumps(raw))
    with pytest.raises(DatasetError, match=r"record 1: paragraph 4 is missing field 'paragraph_text'"):
        load_dataset(path)


def test_unknown_format_lists_known_formats(tmp_path):
    path = _write(tmp_path, "other.json", json.dumps([{"prompt": "hi", "completion": "there"}]))
    with pytest.raises(DatasetError, match=r"other\.json: unknown format .*'completion'.*hotpotqa") as info:
        load_dataset(path)
    assert all(name in str(info.value) for name in DATASET_FORMATS)


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("   \n", "the file is empty"),
    ("[]", "contains no question records"),
    ('{"id": "1", "question": "q"}\nnot json\n', "line 2 is not valid JSON"),
    ('["just", "strings"]', "unknown format"),
])
def test_bad_files(tmp_path, content, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(_write(tmp_path, "bad.jsonl", content))


def test_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(tmp_path / "nope.json")


def test_bare_sample_name_resolves(hotpotqa_path):
    assert load_dataset("hotpotqa_sample70").source == str(hotpotqa_path)


def test_split_pool_is_deterministic_and_disjoint(hotpotqa_path):
    data = load_dataset(hotpotqa_path)
    a, b = split_pool(data, 20), split_pool(data, 20)
    assert [q.qid for q in a.pool] == [q.qid for q in b.pool] and len(a.pool) == 20 and len(a.questions) == 50
    assert not {q.qid for q in a.pool} & {q.qid for q in a.questions}
    assert split_pool(a, 5) is a  # a dataset with a pool keeps it


def test_fifos_and_devices_are_refused_before_reading_and_never_hang(tmp_path):
    import os
    import threading

    from ragscale.datasets import load_gsm8k

    os.mkfifo(tmp_path / "pipe.json")
    outcomes = []

    def load_all():
        for loader in (load_dataset, load_gsm8k):
            for path in ("/dev/zero", tmp_path / "pipe.json"):
                try:
                    loader(path)
                except DatasetError as exc:
                    outcomes.append(str(exc))

    worker = threading.Thread(target=load_all, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "a loader hung on a FIFO"
    assert len(outcomes) == 4 and all("not a regular file" in o for o in outcomes), outcomes


def test_files_over_the_size_cap_are_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": "a", "question": "q?", "golden_answers": ["x"], "pad": "y" * 1000}) + "\n"
    path.write_text(line * 1200)  # ~1.2 MB
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "1")
    with pytest.raises(DatasetError, match="RAGSCALE_MAX_FILE_MB"):
        load_dataset(path)
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "2")
    assert len(load_dataset(path).questions) == 1200
