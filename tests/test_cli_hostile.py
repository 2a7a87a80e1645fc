"""One line, never a traceback, for hostile command-line input; uploads within a quota
(issue #24, minor list)."""

from __future__ import annotations

import os
import time

import pytest

from ragscale import deploy
from ragscale.cli import main


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_sweep_on_deeply_nested_json_is_one_line(tmp_path, capsys):
    for name, text in {"array.json": "[" * 100_000 + "]" * 100_000,
                       "lines.jsonl": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n"}.items():
        path = tmp_path / name
        path.write_text(text)
        code, err = _run(["sweep", "--dataset", str(path), "--out", str(tmp_path / "out.sqlite")], capsys)
        assert code == 2 and err.startswith("ragscale: error:") and "nested too deeply" in err, err[-300:]
        assert "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--width", "100000000"), ("--step-tokens", "100000000"),
                                         ("--max-depth", "100000000")])
def test_search_with_an_absurd_size_is_one_line_before_any_model_loads(capsys, flag, value):
    code, err = _run(["search", "--task", "arithmetic", "--verifier", "rules", flag, value], capsys)
    assert code == 2 and err.startswith("ragscale: error:") and "Traceback" not in err, err[-300:]


def test_uploads_stay_within_their_quota_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSCALE_UPLOADS_MB", "1")
    saved = []
    for i in range(6):  # 6 distinct uploads of 300 KB into a 1 MB quota
        saved.append(deploy.save_upload(f"set{i}.json", b"[" + b" " * 300_000 + str(i).encode() + b"]"))
        os.utime(saved[-1], (time.time() - 100 + i, time.time() - 100 + i))  # a clear order of use
    total = sum(p.stat().st_size for p in deploy.uploads_dir().iterdir())
    assert total <= 2**20
    assert saved[-1].exists() and not saved[0].exists()
    with pytest.raises(deploy.UserError, match="limit here is 1 MB"):
        deploy.save_upload("huge.json", b"[" + b" " * 2_000_000 + b"]")
