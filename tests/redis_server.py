"""A real redis-server (Debian's) on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from monitor.vllm_server import free_port

REDIS_SERVER = shutil.which("redis-server")
requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (scripts/setup.sh installs it)"
)


class RedisServer:
    """redis-server with an append-only file, so a restart on the same port keeps the data
    (a stop/start is an outage, not a wipe). ``acl`` lines are written to an ACL file."""

    def __init__(self, directory: Path, acl: list[str] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.acl_file: Path | None = None
        if acl is not None:
            self.acl_file = directory / "users.acl"
            self.acl_file.write_text("\n".join(acl) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.acl_file is not None:
            args += ["--aclfile", str(self.acl_file)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.admin().ping()
                return self
            except redis.AuthenticationError:
                return self  # up, and refusing the default user as configured
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited:\n{(self.directory / 'redis.log').read_text()}")
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def admin(self, **kwargs) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5, **kwargs)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
