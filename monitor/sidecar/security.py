"""Who may talk to the sidecar: bearer token, TLS / mTLS credentials, Unix socket permissions.

Inside a pod the default transport is a Unix socket in a shared volume, guarded by file
permissions. Over TCP the server uses TLS (mTLS when a client CA is set) and a bearer token,
checked by BearerTokenInterceptor with a constant-time comparison. The health service is
exempt so kubelet and load balancers can probe without a secret.
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from monitor.config import TlsSettings
from monitor.errors import ConfigError
from monitor.sidecar.metrics import SidecarMetrics

logger = logging.getLogger(__name__)

#: Where the settings used here live in the configuration tree, for error messages.
_TLS_FIELD = "sidecar.tls"
_LISTEN_FIELD = "sidecar.grpc_listen"
_TOKEN_FIELD = "sidecar.auth_token_file"

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_UNIX_PATH_MAX = 107


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    A rejected call gets a replacement handler of the same kind that aborts, so the real
    handler never runs. Methods under ``exempt_prefixes`` (the health service) pass freely.
    Put it after MetricsInterceptor so rejected calls are counted as UNAUTHENTICATED.
    """

    def __init__(
        self,
        token: str,
        metrics: SidecarMetrics | None = None,
        exempt_prefixes: Sequence[str] = ("/grpc.health.v1.Health/",),
    ) -> None:
        if not token or token != token.strip():
            raise ConfigError(
                f"{_TOKEN_FIELD}: the bearer token is empty or has surrounding whitespace. "
                "Put a non-empty token without spaces or newlines around it in the file."
            )
        self._token = token.encode()
        self._metrics = metrics
        self._exempt = tuple(exempt_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._exempt):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler
        if self._metrics is not None:
            self._metrics.dropped.labels("unauthenticated").inc()
        logger.debug("rejected %s: %s", method, problem)
        return _rejecting_handler(handler, f"{method}: {problem}")

    def _problem(self, metadata: Sequence[tuple[str, Any]]) -> str | None:
        """What is wrong with the call's credentials and how to fix it; None if they are valid."""
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return (
                "missing 'authorization' metadata. This sidecar requires a bearer token: send "
                f"'authorization: Bearer <token>' with the token from {_TOKEN_FIELD}."
            )
        if len(values) > 1:
            return "more than one 'authorization' metadata entry. Send exactly one bearer token."
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, presented = value.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return (
                "the 'authorization' metadata is not a bearer token. Send "
                f"'authorization: Bearer <token>' with the token from {_TOKEN_FIELD}."
            )
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return (
                "the bearer token is wrong. Send the token from this sidecar's "
                f"{_TOKEN_FIELD} (it may have been rotated)."
            )
        return None


def _rejecting_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts every call with UNAUTHENTICATED."""

    # A coroutine even for streaming responses: grpc.aio then treats it as a reader/writer
    # handler, which may finish without writing anything.
    async def reject(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(
        reject,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; mTLS (client certificate required) when client_ca_file is set."""
    if tls.cert_file is None and tls.key_file is None:
        raise ConfigError(
            f"{_TLS_FIELD}.cert_file and {_TLS_FIELD}.key_file are not set: TLS needs a "
            "certificate and its private key. Set both to PEM files."
        )
    if tls.cert_file is None or tls.key_file is None:
        missing, given = ("cert_file", "key_file") if tls.cert_file is None else ("key_file", "cert_file")
        raise ConfigError(
            f"{_TLS_FIELD}.{missing} is not set but {_TLS_FIELD}.{given} is: TLS needs both the "
            f"certificate and its private key. Set {_TLS_FIELD}.{missing} to a PEM file."
        )
    cert = _read_pem("cert_file", tls.cert_file)
    key = _read_pem("key_file", tls.key_file)
    client_ca = None if tls.client_ca_file is None else _read_pem("client_ca_file", tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read_pem(name: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{_TLS_FIELD}.{name} {path}: cannot read it ({exc.strerror}). Point it at a readable PEM file."
        ) from None
    if b"-----BEGIN " not in data:
        raise ConfigError(
            f"{_TLS_FIELD}.{name} {path}: not a PEM file (no '-----BEGIN' line). "
            "Convert it to PEM, e.g. with `openssl x509 -inform der -in FILE -out FILE.pem`."
        )
    return data


def prepare_unix_socket(path: Path) -> None:
    """Make ``path`` ready for the server to bind: parent directory there, no stale socket.

    A socket file left by a server that died is removed; a live server on it, or a file
    that is not a socket, is an error rather than something to delete.
    """
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ConfigError(
            f"{_LISTEN_FIELD} unix://{path}: the path is longer than the {_UNIX_PATH_MAX} bytes "
            "a Unix socket address can hold. Choose a shorter path."
        )
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
        # Only for a directory we created: an existing one belongs to whoever set it up.
        os.chmod(parent, 0o750)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(
            f"{_LISTEN_FIELD} unix://{path}: the path exists and is not a socket. "
            "Choose another socket path or remove that file yourself."
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            logger.info("removing stale socket %s left by a server that is gone", path)
            path.unlink(missing_ok=True)
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # removed between lstat and connect
                return
            raise ConfigError(
                f"{_LISTEN_FIELD} unix://{path}: cannot tell whether a server uses this socket "
                f"({exc.strerror or exc}). Check its permissions or choose another path."
            ) from None
    raise ConfigError(
        f"{_LISTEN_FIELD} unix://{path}: another server is listening on this socket. "
        "Stop it, or give this sidecar a different socket path."
    )


def secure_unix_socket(path: Path, mode: int) -> None:
    """Set the socket's permissions once the server has bound it.

    Between bind and this call the socket has the umask's permissions; the 0o750 parent
    directory from prepare_unix_socket covers that window.
    """
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise ConfigError(
            f"sidecar.socket_mode {oct(mode)} on {path}: cannot set it ({exc.strerror}). "
            "Check that the server bound this socket and runs as the file's owner."
        ) from None
