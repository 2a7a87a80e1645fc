"""The converted model copy is verified, not trusted: a corrupted artefact is rebuilt with a
one-line notice, temporary folders never leak, and a load from a repaired copy works."""

from __future__ import annotations

import os

import pytest

from ragscale.engines import model_files
from ragscale.engines.model_files import MANIFEST, ModelSource, check_manifest, ensure_copy
from tests.test_local_model import build_tiny_llama


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A stand-in GGUF file; its "conversion" writes the tiny model (no GGUF reading needed)."""
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    return ModelSource("tiny", gguf, "gguf")


class Builder:
    def __init__(self):
        self.calls = 0

    def __call__(self, source, folder):
        self.calls += 1
        build_tiny_llama(folder)


def leftovers(folder):
    return [p.name for p in folder.parent.iterdir() if ".tmp" in p.name]


@pytest.mark.model
@pytest.mark.parametrize("damage", ["random bytes in the weights", "deleted config.json", "truncated tokenizer",
                                    "deleted manifest"])
def test_a_damaged_copy_is_rebuilt_with_one_notice(source, damage, capsys):
    build = Builder()
    copy = ensure_copy(source, build)
    assert build.calls == 1 and check_manifest(copy) is None and (copy / MANIFEST).exists()
    assert ensure_copy(source, build) == copy and build.calls == 1  # a good copy is reused
    if damage == "random bytes in the weights":
        weights = copy / "model.safetensors"
        with open(weights, "r+b") as f:  # same size: only the checksum can tell
            f.seek(weights.stat().st_size // 2)
            f.write(os.urandom(4096))
    elif damage == "deleted config.json":
        (copy / "config.json").unlink()
    elif damage == "truncated tokenizer":
        tokenizer = copy / "tokenizer.json"
        tokenizer.write_bytes(tokenizer.read_bytes()[:1000])
    else:
        (copy / MANIFEST).unlink()
    assert check_manifest(copy) is not None
    capsys.readouterr()
    assert ensure_copy(source, build) == copy
    assert build.calls == 2 and check_manifest(copy) is None
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "rebuilding" in notice[0]
    assert leftovers(copy) == []


def test_a_failed_build_leaves_no_temporary_folder_and_stale_ones_are_removed(source):
    def broken(source, folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ensure_copy(source, broken)
    target = model_files.copy_dir(source)
    assert not target.exists() and leftovers(target) == []
    # A process killed mid-build leaves <name>.tmp<pid>; the next build removes it.
    stale = target.with_name(f"{target.name}.tmp999999")
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    with pytest.raises(RuntimeError):
        ensure_copy(source, broken)
    assert not stale.exists()


@pytest.mark.model
def test_load_repairs_the_copy_and_the_model_still_answers(source, monkeypatch, capsys):
    from ragscale.engines.base import SamplingParams
    from ragscale.engines.embedded import EmbeddedEngine

    build = Builder()
    monkeypatch.setattr(model_files, "convert_gguf", build)
    monkeypatch.setattr(model_files, "_loaded", {})
    first = EmbeddedEngine(model=str(source.path), dtype="float32")
    prompt = first.chat_prompt("Say something.")
    before = first.generate([prompt], SamplingParams(max_new_tokens=8))[0].output_ids
    weights = model_files.copy_dir(source) / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size - 8192)
        f.write(os.urandom(8192))
    monkeypatch.setattr(model_files, "_loaded", {})  # a new process
    second = EmbeddedEngine(model=str(source.path), dtype="float32")
    assert build.calls == 2 and "rebuilding" in capsys.readouterr().err
    assert second.generate([prompt], SamplingParams(max_new_tokens=8))[0].output_ids == before
