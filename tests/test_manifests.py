"""Manifests cover every file of a cache (issue #24, item 5): a chroma index's rows in
chroma.sqlite3, not only its HNSW files; the model copy's every file, and a file it does not
list fails the check (added_tokens.json set EOS to "Paris" while the old check passed)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ragscale.engines import model_files
from ragscale.retrieval import manifest
from tests.test_retrieval import FACTS
from tests.test_retrieval_scale import QUESTION, _last_json, _ragscale, built_cache, store_copy  # noqa: F401


def _same_length_edit(store: Path) -> None:
    with sqlite3.connect(store / "chroma.sqlite3") as con:
        rowid, text = con.execute("SELECT rowid, string_value FROM embedding_metadata WHERE key = 'chroma:document' "
                                  "ORDER BY rowid LIMIT 1").fetchone()
        con.execute("UPDATE embedding_metadata SET string_value = ? WHERE rowid = ?", ("X" * len(text), rowid))


def _delete_half(store: Path) -> None:
    with sqlite3.connect(store / "chroma.sqlite3") as con:
        ids = [r[0] for r in con.execute("SELECT id FROM embeddings ORDER BY id")]
        half = ids[: len(ids) // 2]
        con.executemany("DELETE FROM embedding_metadata WHERE id = ?", [(i,) for i in half])
        con.executemany("DELETE FROM embeddings WHERE id = ?", [(i,) for i in half])


@pytest.mark.parametrize("tamper", [_same_length_edit, _delete_half], ids=lambda f: f.__name__.strip("_"))
def test_an_edit_of_the_passages_in_sqlite_fails_the_check(built_cache, tmp_path, tamper):
    store, name, facts = store_copy(built_cache, tmp_path)
    tamper(store)
    assert manifest.check_collection(store, name, facts) == "its passages in chroma.sqlite3 changed since it was built"


def test_an_edited_passage_is_rebuilt_not_served(built_cache, tmp_path):
    cache, data = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    _same_length_edit(copy / "chroma")
    run = _ragscale(["index", "--dataset", str(data), "--query", QUESTION, "-k", "10", "--json"], copy)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ragscale: notice:" in run.stderr
    result = _last_json(run.stdout)
    assert result["embedded"] == len(FACTS)  # rebuilt, not "reused"
    assert not any(set(doc["text"]) == {"X"} for doc in result["documents"])


def test_an_unexpected_file_in_the_segment_folder_fails_the_check(built_cache, tmp_path):
    store, name, facts = store_copy(built_cache, tmp_path)
    segment = store / manifest.vector_segment(store, name)[1]
    (segment / "extra.bin").write_bytes(b"x")
    assert manifest.check_collection(store, name, facts) == "its index files are missing or unexpected"


def test_a_second_collection_in_the_store_leaves_the_first_trusted(built_cache, tmp_path):
    """The rows digest is per collection: building another index rewrites chroma.sqlite3 but must
    not make the first one look tampered with."""
    cache, data = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    other = tmp_path / "other"
    other.mkdir()
    record = json.loads(data.read_text())
    record[0]["context"] = [[f"{t} (other)", [f"{x} Again."]] for t, [x] in record[0]["context"]]
    (other / "other.json").write_text(json.dumps(record))
    assert _ragscale(["index", "--dataset", str(other / "other.json"), "--json"], copy).returncode == 0
    again = _ragscale(["index", "--dataset", str(data), "--json"], copy)
    assert _last_json(again.stdout)["embedded"] == 0 and "notice" not in again.stderr


# ---- the model copy ---------------------------------------------------------------------------

@pytest.fixture
def copy(tmp_path) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name, text in {"config.json": "{}", "tokenizer.json": "{}", "tokenizer_config.json": "{}",
                       "model.safetensors": "weights"}.items():
        (folder / name).write_text(text)
    model_files.write_manifest(folder)
    assert model_files.check_manifest(folder) is None
    return folder


@pytest.mark.parametrize("extra", ["added_tokens.json", "special_tokens_map.json", "chat_template.jinja"])
def test_a_file_the_manifest_does_not_list_fails_the_check(copy, extra):
    (copy / extra).write_text('{"eos_token": "Paris"}')
    assert model_files.check_manifest(copy) == f"{extra} is not in the manifest"
    # The tokenizer-only check (what an SGLang client loads) sees it too: the tokenizer reads it.
    assert model_files.check_manifest(copy, only=("tokenizer.json", "tokenizer_config.json")) is not None


def test_an_unexpected_folder_in_the_copy_fails_the_check(copy):
    (copy / "sub").mkdir()
    assert model_files.check_manifest(copy) == "sub is not in the manifest"
