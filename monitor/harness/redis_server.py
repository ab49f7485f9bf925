"""Start and stop Debian's ``redis-server`` as a child process (demo, tests, benchmarks).

Production deployments point ``redis.url`` at the Redis they already run; this launcher
gives the demo and the integration tests a real server on a free loopback port. It keeps
an append-only file, so a stop and start on the same port is an outage, not a wipe.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from monitor.errors import DependencyError, SaemonError
from monitor.harness import free_port


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass(frozen=True)
class RedisTls:
    """PEM files: the server's certificate and key, the CA, and a client pair for admin()."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path
    client_key: Path


class RedisServer:
    """One redis-server on 127.0.0.1; ``acl`` lines (Redis ACL file syntax) are optional.

    With ``tls`` it listens only for TLS and requires a client certificate signed by the CA
    (mTLS); ``url`` is then ``rediss://``.
    """

    def __init__(
        self,
        directory: Path,
        acl: list[str] | None = None,
        tls: RedisTls | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise DependencyError("redis-server is not installed: run scripts/setup.sh (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.acl_file: Path | None = None
        if acl is not None:
            self.acl_file = directory / "users.acl"
            self.acl_file.write_text("\n".join(acl) + "\n")
        self.tls = tls
        self.extra_args = list(extra_args or [])  # e.g. --replicaof 127.0.0.1 PORT
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
        ]
        if self.acl_file is not None:
            args += ["--aclfile", str(self.acl_file)]
        args += self.extra_args
        if self.tls is not None:
            tls = self.tls
            args[2] = "0"  # no plain-text port
            args += [
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(tls.cert),
                "--tls-key-file",
                str(tls.key),
                "--tls-ca-cert-file",
                str(tls.ca),
                "--tls-auth-clients",
                "yes",
            ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_answering(self.process, self.admin, self.log_path, timeout, f"redis-server on port {self.port}")
        except SaemonError:
            self.kill()
            raise
        return self

    def admin(self, **kwargs) -> redis.Redis:
        """A synchronous client as the default user (over mTLS when the server is TLS)."""
        if self.tls is not None:
            tls = self.tls
            kwargs = {
                "ssl": True,
                "ssl_certfile": str(tls.client_cert),
                "ssl_keyfile": str(tls.client_key),
                "ssl_ca_certs": str(tls.ca),
                **kwargs,
            }
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5, **kwargs)

    def stop(self) -> None:
        """SIGTERM and wait (an outage: the data stays on disk for the next start)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _wait_answering(
    process: subprocess.Popen, admin: Callable[[], redis.Redis], log_path: Path, timeout: float, what: str
) -> None:
    """Until the server answers PING (or refuses the default user, as an ACL may say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin().ping()
            return
        except redis.AuthenticationError:
            return  # up, and refusing the default user as its ACL says
        except redis.ConnectionError:
            if process.poll() is not None:
                log = log_path.read_text() if log_path.exists() else ""
                raise SaemonError(f"{what} exited with {process.returncode}:\n{log}") from None
            time.sleep(0.05)
    raise SaemonError(f"{what} did not answer within {timeout} s")


class RedisSentinel:
    """One Redis Sentinel (``redis-server sentinel.conf --sentinel``: no extra package)
    watching ``master_port`` as ``service``, quick to notice and to fail over (tests)."""

    def __init__(self, directory: Path, master_port: int, service: str = "mymaster") -> None:
        binary = redis_server_binary()
        if binary is None:
            raise DependencyError("redis-server is not installed: run scripts/setup.sh (apt-get install redis-server)")
        self.binary, self.directory, self.service = binary, directory, service
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = directory / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def master_port(self) -> int:
        address = self.admin().sentinel_get_master_addr_by_name(self.service)
        if not isinstance(address, tuple | list):
            raise SaemonError(f"sentinel {self.address} knows no master {self.service!r}")
        return int(address[1])

    def start(self, timeout: float = 10) -> RedisSentinel:
        self.process = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            _wait_answering(
                self.process,
                self.admin,
                self.directory / "sentinel.log",
                timeout,
                f"redis sentinel on port {self.port}",
            )
        except SaemonError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
