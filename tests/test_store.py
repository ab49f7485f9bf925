"""The Redis audit store in-process, against a real redis-server: retention and the backlog."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis_server import RedisServer, requires_redis

from monitor.config import RedisSettings
from monitor.errors import ConfigError
from monitor.harness import free_port
from monitor.harness.sidecar import SidecarProcess, SidecarProcessError
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.store import AuditStore

KEY = "saemon:{m}"


def decision(k: int) -> pb.Decision:
    return pb.Decision(id=f"d{k}", kind=pb.DECISION_KIND_FIRED, request_id=f"r{k}", model_name="m", probe="p")


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.mark.redis
@requires_redis
def test_time_retention_trims_events_older_than_the_window_with_minid(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        settings = RedisSettings(url=server.url, events_retention_seconds=60)

        async def run() -> None:
            store = AuditStore(settings, SidecarMetrics())
            await store.start()
            try:
                admin = store.redis
                an_hour_ago = int((time.time() - 3600) * 1000)
                for k in range(300):
                    await admin.xadd(f"{KEY}:events", {"old": str(k)}, id=f"{an_hour_ago}-{k + 1}")
                fresh = decision(0)
                store.append_event(fresh)  # XADD ... MINID ~ <now - 60 s>
                await wait_until(lambda: fresh.event_id != "")  # set once the XADD answered
                # MINID ~ drops whole stale macro nodes (100 entries each): at most one survives.
                remaining = await admin.xrange(f"{KEY}:events")
                assert remaining[-1][1]["id"] == "d0"
                assert len(remaining) <= 101
            finally:
                await store.stop()

        asyncio.run(run())


def test_while_redis_is_away_decisions_go_live_and_the_backlog_stays_bounded():
    metrics = SidecarMetrics()
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{free_port()}/0", backlog_size=3, reconnect_seconds=0.05, timeout_seconds=0.5
    )
    live: list[pb.Decision] = []

    async def run() -> None:
        store = AuditStore(settings, metrics, on_event=live.append)
        await store.start()
        try:
            assert not store.up
            for k in range(10):
                store.append_event(decision(k))
            assert [d.id for d in live] == [f"d{k}" for k in range(10)]  # served from memory at once
            assert all(d.event_id == "" for d in live)
            assert metrics.registry.get_sample_value("saemon_redis_backlog") == 3  # the newest wait for Redis
        finally:
            await store.stop(flush_timeout=0.1)

    asyncio.run(run())
    assert metrics.registry.get_sample_value("saemon_redis_up") == 0
    assert metrics.registry.get_sample_value("saemon_redis_backlog_dropped_total", {"kind": "event"}) == 7


def test_bad_redis_settings_fail_the_start_naming_the_field(tmp_path, packs):
    base = {"grpc_listen": f"unix://{tmp_path}/s.sock", "probes_dir": str(packs)}
    cases = [
        ({"url": "http://127.0.0.1:6379"}, "redis.url 'http://127.0.0.1:6379'"),
        ({"url": "redis://127.0.0.1:6379", "password_file": str(tmp_path / "none")}, "redis.password_file"),
        ({"url": "redis://127.0.0.1:6379", "tls": {"client_ca_file": str(tmp_path)}}, "use rediss:// for TLS"),
    ]
    for k, (redis, message) in enumerate(cases):
        with pytest.raises(SidecarProcessError, match=message):
            SidecarProcess(tmp_path / f"c{k}", base, name=f"c{k}", redis=redis).start()
    with pytest.raises(ConfigError, match=r"redis.password_file"):
        AuditStore(RedisSettings(url="redis://x", password_file=tmp_path / "none"), SidecarMetrics())


@pytest.mark.redis
@requires_redis
def test_the_audit_trail_goes_over_mutual_tls_with_rediss_urls(tmp_path, packs):
    from tls import make_pki

    from monitor.harness.redis_server import RedisTls

    pki = make_pki(tmp_path / "pki")
    tls_files = RedisTls(pki.server_cert, pki.server_key, pki.ca_cert, pki.client_cert, pki.client_key)
    with RedisServer(tmp_path / "redis", tls=tls_files) as server:
        assert server.url.startswith("rediss://")
        tls = {"client_ca_file": str(pki.ca_cert), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        process = SidecarProcess(
            tmp_path / "sidecar",
            {"grpc_listen": f"unix://{tmp_path}/s.sock", "probes_dir": str(packs)},
            redis={"url": server.url, "tls": tls},
        )
        with process:
            assert process.metric("saemon_redis_up") == 1
            assert process.stop() == 0, process.log()
        # Without a client certificate the server refuses the handshake: Redis counts as down.
        refused = SidecarProcess(
            tmp_path / "refused",
            {"grpc_listen": f"unix://{tmp_path}/r.sock", "probes_dir": str(packs)},
            redis={"url": server.url, "tls": {"client_ca_file": str(pki.ca_cert)}},
            name="refused",
        )
        with refused:
            assert refused.metric("saemon_redis_up") == 0
            assert refused.readiness()[1]["checks"]["redis"].startswith("down")
            assert refused.stop() == 0, refused.log()
