"""Deployment mode: what a page viewer may make the server open, write or call (ragscale.deploy)."""

from __future__ import annotations

import os
import threading

import pytest

from ragscale import deploy
from ragscale.deploy import check_engine_url, read_file_capped, save_upload, sweep_output_path, viewer_path
from ragscale.errors import UserError


@pytest.fixture
def shared_mode(tmp_path, monkeypatch):
    """Shared mode with one data root and one results folder under tmp_path, and a secret beside them."""
    data, results, outside = tmp_path / "data", tmp_path / "results", tmp_path / "outside"
    for folder in (data, results, outside):
        folder.mkdir()
    (data / "ok.json").write_text("[]")
    (results / "mine.sqlite").write_bytes(b"")
    (outside / "secret.json").write_text("[]")
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_DATA_ROOTS", str(data))
    monkeypatch.setenv("RAGSCALE_RESULTS_DIR", str(results))
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _refusal(text: str, kind: str = "dataset") -> str:
    with pytest.raises(UserError) as caught:
        viewer_path(text, kind)
    return str(caught.value)


def test_shared_mode_confines_viewer_paths_to_the_roots(shared_mode):
    data = shared_mode / "data"
    assert viewer_path(str(data / "ok.json"), "dataset") == (data / "ok.json").resolve()
    assert viewer_path("ok.json", "dataset") == (data / "ok.json").resolve()  # relative: under a root
    assert viewer_path("mine.sqlite", "results") == (shared_mode / "results" / "mine.sqlite").resolve()
    (data / "link.json").symlink_to(shared_mode / "outside" / "secret.json")
    (data / "dangling.json").symlink_to(shared_mode / "outside" / "missing.json")
    os.mkfifo(data / "pipe.json")
    hostile = ["/etc/passwd", "/dev/zero", str(shared_mode / "outside" / "secret.json"),
               str(shared_mode / "outside" / "missing.json"), "../outside/secret.json",
               str(data / ".." / "outside" / "secret.json"), "link.json", "dangling.json", "pipe.json",
               str(data), "no-such.json", "~/.ssh/id_rsa", "a\x00b", "x" * 5000]
    messages = {text: _refusal(text) for text in hostile}
    # one wording for all: it never tells whether a file exists outside the roots
    shapes = {m.replace(repr(deploy._shorten(t)), "PATH") for t, m in messages.items()}
    shapes.discard("that is not a usable dataset file path")
    assert len(shapes) == 1, shapes
    assert "not a dataset file this server offers" in shapes.pop()
    assert "not a results file this server offers" in _refusal("/etc/passwd", "results")


def test_local_mode_opens_any_regular_file_but_never_a_fifo_or_device(tmp_path, monkeypatch):
    monkeypatch.delenv("RAGSCALE_MODE", raising=False)
    (tmp_path / "f.json").write_text("[]")
    assert viewer_path(str(tmp_path / "f.json"), "dataset") == (tmp_path / "f.json").resolve()
    assert viewer_path("/etc/passwd", "results").name == "passwd"  # the store then says it is no store
    os.mkfifo(tmp_path / "pipe")
    for text in ("/dev/zero", str(tmp_path / "pipe"), str(tmp_path)):
        assert "not a regular file" in _refusal(text)
    assert "no results file at" in _refusal(str(tmp_path / "none.sqlite"), "results")


def test_capped_read_refuses_fifos_devices_and_big_files_without_waiting(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    done = threading.Event()
    errors = []

    def read_fifo():
        try:
            read_file_capped(tmp_path / "pipe")
        except UserError as exc:
            errors.append(str(exc))
        done.set()

    threading.Thread(target=read_fifo, daemon=True).start()
    assert done.wait(10), "reading a FIFO hung"
    assert "not a regular file" in errors[0]
    with pytest.raises(UserError, match="not a regular file"):
        read_file_capped("/dev/zero")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 * 1024 * 1024))
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "1")
    with pytest.raises(UserError, match="over 1 MB|is 2.0 MB"):
        read_file_capped(big)
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "3")
    assert len(read_file_capped(big)) == 2 * 1024 * 1024


def test_shared_mode_sweeps_write_only_sqlite_files_directly_in_the_results_folder(shared_mode):
    results = (shared_mode / "results").resolve()
    assert sweep_output_path("new.sqlite") == results / "new.sqlite"
    assert sweep_output_path(str(results / "mine.sqlite")) == results / "mine.sqlite"
    for text in ("/etc/passwd", "../outside/x.sqlite", "sub/x.sqlite", "x.json", str(shared_mode / "x.sqlite"),
                 "/tmp/x.sqlite"):
        with pytest.raises(UserError, match="directly in"):
            sweep_output_path(text)
    assert not (results / "sub").exists()


def test_uploads_are_named_by_content_never_by_the_browser(shared_mode):
    saved = save_upload("../../etc/passwd", b"[]")
    assert saved.parent == deploy.uploads_dir() and saved.name.startswith("passwd-") and saved.suffix == ".json"
    assert viewer_path(str(saved), "dataset") == saved.resolve()  # uploads are one of the dataset roots
    assert save_upload("..", b"[1]").parent == deploy.uploads_dir()


SHARED_REFUSAL = "not an engine this server may call"


@pytest.mark.parametrize("url, local_says, shared_says", [
    ("not a url", "is not a URL", "is not a URL"),
    ("", "give a server URL", "give a server URL"),
    ("ftp://127.0.0.1:30000", "is not a URL", "is not a URL"),
    ("http://169.254.169.254/", "link-local", SHARED_REFUSAL),
    ("http://169.254.169.254/latest/meta-data/", "link-local", SHARED_REFUSAL),
    ("http://[::ffff:169.254.169.254]/", "link-local", SHARED_REFUSAL),
    ("http://2852039166/", "link-local", SHARED_REFUSAL),  # 169.254.169.254 written as one number
    ("http://127.0.0.1:30000/x?", "no user name, query or fragment", "no user name, query or fragment"),
    ("http://127.0.0.1:30000/x#", "no user name, query or fragment", "no user name, query or fragment"),
    ("http://user:pw@127.0.0.1:30000", "no user name, query or fragment", "no user name, query or fragment"),
])
def test_engine_urls_refused(url, local_says, shared_says, monkeypatch):
    for mode, says in (("local", local_says), ("shared", shared_says)):
        monkeypatch.setenv("RAGSCALE_MODE", mode)
        with pytest.raises(UserError, match=says):
            check_engine_url(url)


def test_engine_url_allow_list(monkeypatch):
    monkeypatch.delenv("RAGSCALE_MODE", raising=False)
    assert check_engine_url(" http://127.0.0.1:30000/ ") == "http://127.0.0.1:30000"
    assert check_engine_url("https://gpu.example.com:8443/sglang") == "https://gpu.example.com:8443/sglang"
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_ALLOWED_URLS", "http://gpu.example.com:30000, https://router.example.com/sgl/")
    assert check_engine_url("http://localhost:30000") == "http://localhost:30000"
    assert check_engine_url("http://[::1]:30000") == "http://[::1]:30000"
    assert check_engine_url("http://GPU.example.com:30000/") == "http://GPU.example.com:30000"
    assert check_engine_url("https://router.example.com:443/sgl") == "https://router.example.com:443/sgl"
    for url in ("https://gpu.example.com:8443/sglang", "http://gpu.example.com:30001", "http://10.0.0.5:30000",
                "http://127.0.0.1:8501/_stcore/health", "http://router.example.com/sgl"):
        with pytest.raises(UserError, match="not an engine this server may call"):
            check_engine_url(url)


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RAGSCALE_MODE", "public")
    with pytest.raises(UserError, match="RAGSCALE_MODE must be one of local, shared"):
        viewer_path("x", "dataset")


def test_the_shipped_demo_results_are_never_a_sweep_target(monkeypatch):
    from ragscale.config import DATA_DIR

    for mode in ("local", "shared"):
        monkeypatch.setenv("RAGSCALE_MODE", mode)
        with pytest.raises(UserError, match="shipped demo results are read-only|directly in"):
            sweep_output_path(str(DATA_DIR / "demo_results.sqlite"))
