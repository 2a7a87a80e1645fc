"""Retrieval: gold HotpotQA paragraphs rank high; indexes are built once, resume, and handle any k."""

import json

import numpy as np
import pytest

from ragscale.cli import main
from ragscale.datasets import load_dataset
from ragscale.datasets.types import Dataset, Document
from ragscale.errors import DatasetError, UserError
from ragscale.retrieval import EMBEDDING_DIM, build_retriever, collection_name, embed_texts
from ragscale.retrieval import index as index_module

FACTS = [
    ("Vellmoor", "Vellmoor is a city in Tarsenia on the Orrin River, known for its glassworks."),
    ("Dorava Kest", "Dorava Kest is a sculptor who was born in Vellmoor in 1931."),
    ("Amber Loom Ensemble", "The Amber Loom Ensemble is a chamber music group founded in 1962 by Dorava Kest."),
    ("Harrowgate", "Harrowgate is a port town famous for its shipyards and herring markets."),
    ("Glass Orchard", "The Glass Orchard is a novel by Merin Kest about a family of beekeepers."),
    ("Quillon Academy", "Quillon Academy is a school of higher education founded in 1810."),
    ("Tarsenia", "Tarsenia is a mountainous country whose capital is Harrowgate."),
    ("Orrin River", "The Orrin River rises in the northern hills and reaches the sea at Harrowgate."),
    ("Copper Finch Players", "The Copper Finch Players is a theatre company that stages new plays every year."),
    ("Merin Kest", "Merin Kest is a novelist who was born in Harrowgate in 1940."),
]


def _tiny(name="tiny", facts=FACTS) -> Dataset:
    corpus = [Document(doc_id=f"t{i}", title=t, text=x) for i, (t, x) in enumerate(facts)]
    return Dataset(name=name, questions=[], corpus=corpus)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def counted_embeddings(monkeypatch):
    """Counts the passages the index embeds."""
    calls = []

    def counting(texts, *args, **kwargs):
        calls.append(len(texts))
        return embed_texts(texts, *args, **kwargs)

    monkeypatch.setattr(index_module, "embed_texts", counting)
    return calls


def test_embed_texts_shape_dtype_and_norm():
    vectors = embed_texts(["In which city was Dorava Kest born?", "Vellmoor is a city."])
    assert vectors.shape == (2, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embed_texts([]).shape == (0, EMBEDDING_DIM)
    # Same text, same vector; related texts closer than unrelated ones.
    a, b, c = embed_texts(["Dorava Kest was born in Vellmoor.", "Where was Dorava Kest born?", "Shipyards and herring."])
    assert np.allclose(a, embed_texts(["Dorava Kest was born in Vellmoor."])[0], atol=1e-5)
    assert a @ b > a @ c


@pytest.mark.slow  # ~30-45 s on 2 cores when the cache is cold: it embeds the 694 sample paragraphs
def test_gold_hotpotqa_paragraphs_rank_in_top_10(hotpotqa_path):
    # Reuses the index in the normal cache dir: built once per machine, never re-embedded.
    data = load_dataset(hotpotqa_path)
    retriever = build_retriever(data)
    results = retriever.search_batch([q.question for q in data.questions], 10)
    any_gold = [any(t in {d.title for d in docs} for t in q.supporting_titles) for q, docs in zip(data.questions, results)]
    all_gold = [set(q.supporting_titles) <= {d.title for d in docs} for q, docs in zip(data.questions, results)]
    # Measured 0.99 (any gold paragraph) and 0.71 (both) over the 694 pooled paragraphs.
    assert sum(any_gold) / len(any_gold) >= 0.9
    assert sum(all_gold) / len(all_gold) >= 0.6
    assert all(len(docs) == 10 for docs in results)


def test_second_build_reuses_the_index(fresh_cache, counted_embeddings):
    data = _tiny()
    first = build_retriever(data)
    assert first.stats.embedded == len(data.corpus) and sum(counted_embeddings) == len(data.corpus)
    assert (fresh_cache / "chroma").is_dir()
    counted_embeddings.clear()
    second = build_retriever(data)
    assert second.stats.embedded == 0 and counted_embeddings == []
    query = "Who founded the Amber Loom Ensemble?"
    assert second.search(query, 3) == first.search(query, 3)
    assert second.search(query, 1)[0].title == "Amber Loom Ensemble"


def test_interrupted_build_resumes_without_re_embedding(fresh_cache, counted_embeddings, monkeypatch):
    monkeypatch.setattr(index_module, "CHUNK", 4)
    data = _tiny()

    def crash_after_first_chunk(done, total, message):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_retriever(data, progress=crash_after_first_chunk)
    assert sum(counted_embeddings) == 4
    counted_embeddings.clear()
    seen = []
    retriever = build_retriever(data, progress=lambda d, t, m: seen.append((d, t, m)))
    assert retriever.stats.embedded == len(data.corpus) - 4 and sum(counted_embeddings) == len(data.corpus) - 4
    assert (4, 10) in [(d, t) for d, t, m in seen if m.startswith("resuming")] and seen[-1][:2] == (10, 10)
    assert retriever.collection.count() == len(data.corpus)
    assert not (fresh_cache / "index-work").exists()  # saved vectors are removed once the index is finished


def test_k_zero_and_k_beyond_corpus(fresh_cache):
    retriever = build_retriever(_tiny())
    assert retriever.search("Vellmoor", 0) == []
    everything = retriever.search("Vellmoor", 1000)
    assert sorted(d.doc_id for d in everything) == sorted(d.doc_id for d in retriever.corpus)
    assert everything[0].title == "Vellmoor"
    batch = retriever.search_batch(["Merin Kest birthplace", "Orrin River"], 2)
    assert [len(docs) for docs in batch] == [2, 2]
    assert batch[0][0].title == "Merin Kest" and batch[1][0].title == "Orrin River"
    assert retriever.search_batch([], 5) == []
    with pytest.raises(UserError, match="k must be at least 0"):
        retriever.search("x", -1)


def test_collection_is_keyed_by_corpus_content():
    changed = FACTS[:-1] + [("Merin Kest", "Merin Kest is a novelist who was born in Vellmoor in 1940.")]
    assert collection_name(_tiny().corpus) == collection_name(_tiny("other name").corpus)
    assert collection_name(_tiny().corpus) != collection_name(_tiny(facts=changed).corpus)


def test_empty_corpus_is_a_clear_error(fresh_cache):
    with pytest.raises(DatasetError, match="no passages"):
        build_retriever(Dataset(name="flashrag-only", questions=[], corpus=[]))


def test_unreachable_chroma_server_is_a_user_error():
    with pytest.raises(UserError, match="cannot reach the Chroma server"):
        build_retriever(_tiny(), url="http://127.0.0.1:9")


def test_bench_retrieval_prints_json(capsys):
    assert main(["bench", "retrieval", "--json", "--passages", "12", "--queries", "5", "--no-server"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"passages", "embedded_build_seconds", "embed_seconds", "embedded_query_p50_ms",
                           "embedded_query_p95_ms", "embedded_size_mb", "queries"}
    assert result["passages"] == 12 and result["queries"] == 5 and result["corpus"] == "samples"
    assert result["embed_seconds"] > 0 and result["embedded_query_p50_ms"] <= result["embedded_query_p95_ms"]


def test_bench_retrieval_generates_a_corpus_beyond_the_samples(tmp_path, capsys):
    record = {"_id": "q1", "question": "Who founded the Amber Loom Ensemble?", "answer": "Dorava Kest",
              "context": [[t, [x]] for t, x in FACTS], "supporting_facts": [["Amber Loom Ensemble", 0]]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps([record]))
    assert main(["bench", "retrieval", "--json", "--dataset", str(path), "--passages", "300", "--queries", "1",
                 "--no-server"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["passages"] == 300 and result["corpus"] == "generated" and result["embedded_size_mb"] > 0
    assert main(["bench", "retrieval", "--json", "--dataset", "demo", "--passages", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_index_command_builds_then_reuses(fresh_cache, tmp_path, capsys):
    record = {"_id": "q1", "question": "Who founded the Amber Loom Ensemble?", "answer": "Dorava Kest",
              "context": [[t, [x]] for t, x in FACTS], "supporting_facts": [["Amber Loom Ensemble", 0]]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps([record]))
    argv = ["index", "--dataset", str(path), "--query", record["question"], "-k", "2", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["passages"] == first["embedded"] == len(FACTS)
    assert first["documents"][0]["title"] == "Amber Loom Ensemble" and len(first["documents"]) == 2
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["embedded"] == 0 and second["collection"] == first["collection"]
