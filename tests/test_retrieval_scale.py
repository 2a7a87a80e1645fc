"""Retrieval at corpus scale: verified caches, a killed index resumes, corpus formats, imported
vectors, the device choice, and one retrieval setting (--chroma-url) against a live Chroma server."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragscale.cli import build_parser, main
from ragscale.datasets.types import Dataset, Document
from ragscale.errors import DatasetError, UserError
from ragscale.retrieval import build_retriever, embed_texts, open_index, retrieval_status
from ragscale.retrieval import embeddings as embeddings_module
from ragscale.retrieval import manifest, options
from ragscale.retrieval.corpus import hash_documents, iter_corpus
from ragscale.retrieval.server import chroma_executable, chroma_server
from tests.test_retrieval import FACTS

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Who founded the Amber Loom Ensemble?"


def _tiny_file(tmp_path) -> Path:
    record = {"_id": "q1", "question": QUESTION, "answer": "Dorava Kest",
              "context": [[t, [x]] for t, x in FACTS], "supporting_facts": [["Amber Loom Ensemble", 0]]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps([record]))
    return path


def _ragscale(args, cache: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    """``python -m ragscale ARGS`` in a new process, as a user runs it (a crash there cannot take pytest down)."""
    full_env = dict(os.environ, RAGSCALE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), **env)
    full_env.pop(options.ENV_URL, None)
    return subprocess.run([sys.executable, "-m", "ragscale", *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _embedded_by_default(monkeypatch):
    """Tests choose the store explicitly; a developer's RAGSCALE_CHROMA_URL must not leak in."""
    monkeypatch.delenv(options.ENV_URL, raising=False)
    options.use_settings(None)
    yield
    options.use_settings(None)


# ---- corrupted caches: verified before chromadb reads them ------------------------------------

@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A cache dir holding the finished index of the 10-passage dataset, built by the CLI."""
    base = tmp_path_factory.mktemp("built")
    data = _tiny_file(base)
    cache = base / "cache"
    run = _ragscale(["index", "--dataset", str(data), "--json"], cache)
    assert run.returncode == 0, run.stderr
    assert _last_json(run.stdout)["embedded"] == len(FACTS)
    return cache, data


def _segment(store: Path) -> Path:
    folders = [p for p in store.iterdir() if p.is_dir() and p.name != manifest.MANIFEST_DIR]
    assert len(folders) == 1
    return folders[0]


def _delete_segment(store):
    shutil.rmtree(_segment(store))


def _random_hnsw(store):
    # Before the manifest check this crashed the process in chromadb's native code (SIGSEGV).
    (_segment(store) / "data_level0.bin").write_bytes(np.random.default_rng(0).bytes(1_000_000))


def _truncated_metadata(store):
    # The HNSW header (dimensions, counts); larger collections also keep index_metadata.pickle.
    path = _segment(store) / "header.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _no_manifest(store):
    shutil.rmtree(store / manifest.MANIFEST_DIR)


def _garbage_manifest(store):
    for path in (store / manifest.MANIFEST_DIR).glob("*.json"):
        path.write_text("{not json")


def _random_sqlite(store):
    path = store / "chroma.sqlite3"
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))


@pytest.mark.parametrize("corrupt", [_delete_segment, _random_hnsw, _truncated_metadata, _no_manifest,
                                     _garbage_manifest, _random_sqlite], ids=lambda f: f.__name__.strip("_"))
def test_a_corrupted_index_is_rebuilt_with_a_notice(built_cache, tmp_path, corrupt):
    cache, data = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    corrupt(copy / "chroma")
    run = _ragscale(["index", "--dataset", str(data), "--query", QUESTION, "-k", "10", "--json"], copy)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert "ragscale: notice:" in run.stderr and "Traceback" not in run.stderr
    result = _last_json(run.stdout)
    # Every passage is back (a trusted count() had served 87 of 1,110 with the segment gone).
    assert result["embedded"] == len(FACTS) and len(result["documents"]) == len(FACTS)
    assert result["documents"][0]["title"] == "Amber Loom Ensemble"
    again = _ragscale(["index", "--dataset", str(data), "--json"], copy)
    assert _last_json(again.stdout)["embedded"] == 0 and "notice" not in again.stderr


def store_copy(built, tmp_path) -> tuple[Path, str, dict]:
    """A copy of the built store: (folder, collection name, the facts its manifest was checked with)."""
    cache, _ = built
    store = tmp_path / "chroma"
    shutil.copytree(cache / "chroma", store)
    (name,) = manifest.collection_names(store)
    facts = {k: manifest.read_manifest(store, name)[k] for k in ("corpus_key", "embedding_model", "passages")}
    assert manifest.check_collection(store, name, facts) is None
    return store, name, facts


def test_manifest_is_checked_before_chromadb_opens_the_store(built_cache, tmp_path):
    store, name, facts = store_copy(built_cache, tmp_path)
    assert manifest.check_collection(store, name, {**facts, "embedding_model": "other"}) == "built for another embedding model"
    _random_hnsw(store)
    assert "data_level0.bin changed" in manifest.check_collection(store, name, facts)


# ---- ragscale index --corpus ------------------------------------------------------------------

def _passages(n: int, words: int = 12) -> list[dict]:
    rng = np.random.default_rng(n)
    vocabulary = ["river", "city", "founded", "museum", "glass", "orchard", "novel", "school", "harbour", "choir",
                  "bridge", "valley", "painter", "archive", "festival", "railway", "library", "mountain"]
    return [{"id": f"p{i}", "title": f"Place {i}",
             "text": f"Place {i} is known for its " + " ".join(rng.choice(vocabulary, words))}
            for i in range(n)]


def test_corpus_formats_stream_the_same_passages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _passages(5)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flashrag = tmp_path / "flashrag.jsonl.gz"
    with gzip.open(flashrag, "wt") as out:
        for r in rows:
            out.write(json.dumps({"id": r["id"], "contents": f'"{r["title"]}"\n{r["text"]}'}) + "\n")
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [Document(doc_id=r["id"], title=r["title"], text=r["text"]) for r in rows]
    for path in (plain, flashrag, parquet):
        assert list(iter_corpus(path)) == expected, path.name
    assert hash_documents(iter_corpus(plain)) == hash_documents(iter_corpus(parquet))

    kilt = tmp_path / "kilt.jsonl"
    kilt.write_text(json.dumps({"wikipedia_id": "42", "wikipedia_title": "Vellmoor",
                                "text": ["Vellmoor is a city.", " ", "It makes glass."]}) + "\n")
    assert [(d.doc_id, d.title, d.text) for d in iter_corpus(kilt)] == [
        ("42_0", "Vellmoor", "Vellmoor is a city."), ("42_2", "Vellmoor", "It makes glass.")]

    folder = tmp_path / "datasets"
    folder.mkdir()
    shutil.copy(_tiny_file(tmp_path), folder / "a.json")
    shutil.copy(folder / "a.json", folder / "b.json")  # the same paragraphs twice: kept once
    assert [d.title for d in iter_corpus(folder)] == [t for t, _ in FACTS]


@pytest.mark.parametrize("content, message", [
    ("not json\n", "line 1: not JSON"), ('{"title": "x", "text": "y"}\n', "no 'id' field"),
    ('{"id": "1", "title": "x"}\n', "no 'text' or 'contents'")])
def test_bad_corpus_lines_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        list(iter_corpus(path))
    (tmp_path / "corpus.csv").write_text("id,text\n")
    with pytest.raises(DatasetError, match="unknown corpus format"):
        iter_corpus(tmp_path / "corpus.csv")


def test_killed_index_resumes_with_no_passage_lost_or_repeated(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = _passages(240, words=120)
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "cache"
    args = ["index", "--corpus", str(corpus), "--out", "killed", "--chunk", "4", "--device", "cpu", "--json"]
    env = dict(os.environ, RAGSCALE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop(options.ENV_URL, None)
    process = subprocess.Popen([sys.executable, "-m", "ragscale", *args], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = cache / "index-work"
    deadline = time.monotonic() + 300
    while len(list(work.glob("*/*.npy"))) < 2:
        assert process.poll() is None, "the index finished or failed before it could be killed"
        assert time.monotonic() < deadline, "no vectors were saved within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # a real kill: no handler, no cleanup
    assert process.wait(timeout=30) == -signal.SIGKILL
    saved = len(list(work.glob("*/[0-9]*.npy"))) * 4
    assert 0 < saved < len(rows)

    resumed = _ragscale(args, cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = _last_json(resumed.stdout)
    assert result["passages"] == len(rows)
    assert result["embedded"] == len(rows) - saved  # the saved passages were not embedded again
    collection = open_index("killed", path=cache / "chroma").collection
    ids = collection.get(include=[])["ids"]
    assert len(ids) == len(rows) and set(ids) == {r["id"] for r in rows}  # none lost, none twice
    assert not work.exists() or not any(work.iterdir())
    # Vectors saved before the kill and after it come from one model: each passage finds itself.
    retriever = open_index("killed", path=cache / "chroma")
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        assert retriever.search(f"{row['title']}: {row['text']}", 1)[0].doc_id == row["id"]


def test_imported_vectors_are_indexed_without_embedding(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "title": t, "text": x}) + "\n" for i, (t, x) in enumerate(FACTS)))
    vectors = embed_texts([Document(doc_id="", title=t, text=x).render() for t, x in FACTS])
    npy = tmp_path / "vectors.npy"
    np.save(npy, vectors * 3.0)  # not normalised: the importer normalises

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load when vectors are imported")

    monkeypatch.setattr(embeddings_module, "BulkEmbedder", no_model)
    assert main(["index", "--corpus", str(corpus), "--out", "imported", "--embeddings", str(npy),
                 "--query", QUESTION, "-k", "1", "--json"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["embedded"] == len(FACTS) and result["embedder"] == "imported from vectors.npy"
    assert result["documents"][0]["title"] == "Amber Loom Ensemble" and len(result["corpus_sha256"]) == 64
    assert result["embedding_model"] == "all-MiniLM-L6-v2"

    np.save(npy, vectors[:3])
    assert main(["index", "--corpus", str(corpus), "--out", "short", "--embeddings", str(npy)]) == 2
    assert "3 vectors for 10 passages" in capsys.readouterr().err


def test_device_choice_is_one_code_path(monkeypatch, capsys, tmp_path):
    import torch

    assert embeddings_module.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embeddings_module.resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        embeddings_module.resolve_device("cuda")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "1", "text": "x"}) + "\n")
    assert main(["index", "--corpus", str(corpus), "--out", "gpu", "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert embeddings_module.resolve_device("auto") == "cuda"


def test_bulk_embedder_agrees_with_the_reference():
    texts = [Document(doc_id="", title=t, text=x).render() for t, x in FACTS]
    fast = embeddings_module.BulkEmbedder("cpu").embed(texts)
    cosine = (fast * embed_texts(texts)).sum(axis=1)
    assert fast.shape == (len(texts), 384) and cosine.min() >= 0.99


def test_index_rejects_bad_names_and_stray_flags(capsys, tmp_path):
    assert main(["index", "--corpus", str(tmp_path / "missing.jsonl"), "--out", "x1"]) == 2
    assert "corpus not found" in capsys.readouterr().err
    assert main(["index", "--corpus", str(tmp_path), "--out", "../etc"]) == 2
    assert "--out must be" in capsys.readouterr().err
    assert main(["index", "--out", "abc"]) == 2
    assert "go with --corpus" in capsys.readouterr().err


# ---- one retrieval setting: --chroma-url / RAGSCALE_CHROMA_URL ---------------------------------

def test_chroma_url_flag_is_on_every_retrieving_command():
    parser = build_parser()
    for argv in (["sweep"], ["search"], ["search-sweep"], ["explorer-precompute"], ["index"]):
        args = parser.parse_args(argv + ["--chroma-url", "http://127.0.0.1:8123"])
        assert args.chroma_url == "http://127.0.0.1:8123", argv


@pytest.mark.parametrize("argv", [["sweep", "--dataset", "demo"], ["search", "--dataset", "demo"],
                                  ["search-sweep", "--dataset", "demo"], ["explorer-precompute"]])
def test_unreachable_chroma_url_fails_before_a_model_loads(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a sweep's default results file lands here, if anywhere
    started = time.monotonic()
    assert main(argv + ["--chroma-url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the Chroma server" in capsys.readouterr().err
    assert time.monotonic() - started < 60  # no model was loaded first


def test_setting_precedence(monkeypatch):
    parser = build_parser()
    monkeypatch.setenv(options.ENV_URL, "127.0.0.1:8001")
    assert options.settings_from_env().url == "http://127.0.0.1:8001"
    args = parser.parse_args(["index", "--chroma-url", "embedded"])
    assert options.retriever_settings_from_args(args).url is None and options.current_settings().url is None
    options.use_settings(None)
    assert options.current_settings().url == "http://127.0.0.1:8001"
    for bad in ("ftp://x", "http://h:99999", "http://user:pw@h:1", "http://h:1/path?q#f"):
        with pytest.raises(UserError):
            options.normalise_url(bad)


needs_chroma = pytest.mark.skipif(chroma_executable() is None, reason="the chroma CLI (from chromadb) is not installed")


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    if chroma_executable() is None:
        pytest.skip("the chroma CLI (from chromadb) is not installed")
    with chroma_server(tmp_path_factory.mktemp("chroma-server") / "data") as url:
        yield url


def _two_hop() -> Dataset:
    from tests.test_rag_strategies import tiny_dataset

    return tiny_dataset()


@needs_chroma
def test_server_retrieves_what_the_embedded_store_does(chroma_url, tmp_path):
    data = Dataset(name="tiny", questions=[], corpus=[Document(doc_id=f"t{i}", title=t, text=x)
                                                       for i, (t, x) in enumerate(FACTS)])
    queries = [QUESTION, "Where was Merin Kest born?", "Orrin River", "glassworks city"]
    server = build_retriever(data, url=chroma_url)
    embedded = build_retriever(data, path=str(tmp_path / "embedded"))
    assert [[d.doc_id for d in docs] for docs in server.search_batch(queries, 5)] == \
           [[d.doc_id for d in docs] for docs in embedded.search_batch(queries, 5)]
    assert build_retriever(data, url=chroma_url).stats.embedded == 0  # reused on the server


@needs_chroma
def test_a_sweep_runs_against_the_chroma_server(chroma_url, tmp_path, monkeypatch):
    from ragscale.rag.sweep import SweepSpec, load_rows, run_sweep
    from ragscale.store import ResultsStore
    from tests.fakes import ScriptedEngine
    from tests.test_sweep import reader

    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    data = _two_hop()
    spec = SweepSpec(dataset="tiny", strategies=("rag", "iterdrag"), ks=(1, 2), ms=(0,), ns=(2,), limit=4,
                     pool_size=1, batch_size=2, generate_chains=False)
    rows = {}
    for label, url in (("server", chroma_url), ("embedded", None)):
        options.use_settings(options.RetrieverSettings(url=url))
        run_sweep(spec, ScriptedEngine(reader), ResultsStore(tmp_path / f"{label}.sqlite"), dataset=data)
        rows[label] = load_rows(tmp_path / f"{label}.sqlite").sort_values("key")
    assert len(rows["server"]) > 0
    assert rows["server"]["prediction"].tolist() == rows["embedded"]["prediction"].tolist()
    status = retrieval_status(chroma_url)
    assert status["ok"] and any(c["passages"] == len(data.corpus) for c in status["collections"])


@needs_chroma
def test_a_search_retrieves_from_the_chroma_server(chroma_url, tmp_path, monkeypatch):
    from ragscale.search.tasks import make_task

    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    data = _two_hop()
    args = build_parser().parse_args(["search", "--chroma-url", chroma_url])
    assert options.retriever_settings_from_args(args).url == chroma_url
    on_server = make_task("qa", dataset=data, k=2)
    options.use_settings(options.RetrieverSettings())
    embedded = make_task("qa", dataset=data, k=2)
    for question in data.questions:
        assert [d.doc_id for d in on_server.retrieve(question.question, 3)] == \
               [d.doc_id for d in embedded.retrieve(question.question, 3)]
    assert not (tmp_path / "cache" / "chroma").exists() or manifest.collection_names(tmp_path / "cache" / "chroma")


@needs_chroma
def test_corpus_index_on_the_server(chroma_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "title": t, "text": x}) + "\n" for i, (t, x) in enumerate(FACTS)))
    argv = ["index", "--corpus", str(corpus), "--out", "facts", "--chroma-url", chroma_url, "--device", "cpu",
            "--query", QUESTION, "-k", "2", "--json"]
    assert main(argv) == 0
    first = _last_json(capsys.readouterr().out)
    assert first["embedded"] == len(FACTS) and first["documents"][0]["title"] == "Amber Loom Ensemble"
    assert main(argv) == 0
    assert _last_json(capsys.readouterr().out)["embedded"] == 0
    assert open_index("facts", url=chroma_url).size == len(FACTS)
    assert retrieval_status(chroma_url, collection="corpus-facts")["collection"] == {"name": "corpus-facts",
                                                                                      "passages": len(FACTS)}


# ---- retrieval_status: what the Engine page shows -------------------------------------------

def test_status_of_the_embedded_store(built_cache):
    cache, _ = built_cache
    status = retrieval_status(None, path=str(cache / "chroma"))
    assert status["ok"] and status["mode"] == "embedded"
    assert [c["passages"] for c in status["collections"]] == [len(FACTS)]


def test_status_never_echoes_a_foreign_server(tmp_path):
    import http.server
    import threading

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"secret": "SECRET-TOKEN-123", "nanosecond heartbeat": "SECRET-TOKEN-123"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status = retrieval_status(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert status["ok"] is False and "SECRET" not in json.dumps(status)
    assert "\n" not in status["error"]
    closed = retrieval_status("http://127.0.0.1:9")
    assert closed["ok"] is False and "cannot reach" in closed["error"]
    assert retrieval_status("ftp://x")["error"].startswith("not a Chroma server URL")


def test_two_processes_building_one_index_at_once_both_finish(tmp_path):
    """The app and a CLI sweep may build the same index at once: the second waits for the first
    (before, each resumed from and then deleted the other's shards: FileNotFoundError)."""
    cache = tmp_path / "cache"
    rows = [{"id": f"p{i}", "title": f"T{i}", "text": f"passage {i}"} for i in range(3000)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vectors = np.random.default_rng(0).standard_normal((len(rows), 384)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    env = dict(os.environ, RAGSCALE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "ragscale", "index", "--corpus", str(corpus), "--out", "shared",
               "--embeddings", str(tmp_path / "vectors.npy"), "--chunk", "50", "--json"]
    builders = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    outcomes = [b.communicate(timeout=600) for b in builders]
    for builder, (out, err) in zip(builders, outcomes):
        assert builder.returncode == 0, err[-2000:]
        assert _last_json(out)["passages"] == len(rows)
    assert len(open_index("shared", path=cache / "chroma").collection.get(include=[])["ids"]) == len(rows)
