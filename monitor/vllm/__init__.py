"""saemon's vLLM plugin, loaded through the ``vllm.general_plugins`` entry point.

vLLM calls ``register()`` in every one of its processes (API server, engine core, each
worker) before the model is built. It wraps ``Worker.load_model`` and
``Worker.execute_model``; the wrappers do nothing unless the engine is configured for
saemon (``--additional-config '{"saemon": {"pack": ...}}'`` or a ``plugin.pack`` in the
file named by ``SAEMON_CONFIG``). ``SAEMON_PLUGIN_DISABLE=1`` turns the plugin off entirely.
On worker shutdown it flushes what is queued for the sidecar. Everything heavy lives in the modules beside this one: ``adapter`` (vLLM internals),
``tap``, ``batch`` (row attribution), ``wire`` (a step as a StepBatch), ``client`` (the
stream to the sidecar), ``worker`` (the per-worker monitor).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_registered = False


def register() -> None:
    """vLLM's plugin hook: idempotent; inert unless saemon is configured for the engine."""
    global _registered
    if _registered:
        return
    _registered = True
    from monitor.config import plugin_disabled

    if plugin_disabled():
        log.info("saemon vLLM plugin disabled by SAEMON_PLUGIN_DISABLE")
        return
    from monitor.vllm import adapter

    _log_like_vllm()
    adapter.check_version()
    adapter.patch_worker(_on_loaded, _on_step, _on_shutdown, _on_control)
    adapter.patch_scheduler(_recompute_prefixes)


def _log_like_vllm() -> None:
    """vLLM configures only its own loggers; give saemon's a handler so its messages (the
    pack in use, refusals, dropped steps) reach the same log, unless the host configured one."""
    logger = logging.getLogger("monitor")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [saemon] %(message)s", "%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def is_registered() -> bool:
    """Whether vLLM (or anything else) has called register() in this process."""
    return _registered


def _on_loaded(worker: Any) -> None:
    from monitor.vllm.worker import WorkerMonitor, settings_for

    settings = settings_for(worker.vllm_config)
    if settings is None:
        return
    monitor = WorkerMonitor(worker, settings)
    monitor.loaded()
    worker._saemon_monitor = monitor


def _on_step(worker: Any, scheduler_output: Any) -> None:
    monitor = getattr(worker, "_saemon_monitor", None)
    if monitor is not None:
        monitor.step(scheduler_output)


def _on_control(worker: Any, command: str, argument: Any) -> Any:
    monitor = getattr(worker, "_saemon_monitor", None)
    if monitor is None:
        raise RuntimeError("saemon is not monitoring this vLLM engine (no plugin.pack configured)")
    if command == "reload_packs":
        return monitor.reload_packs(argument)
    raise ValueError(f"unknown saemon control command {command!r}")


def _recompute_prefixes(vllm_config: Any) -> bool:
    from monitor.vllm.worker import settings_for

    settings = settings_for(vllm_config)
    return settings is not None and settings.plugin.prefix_cache == "recompute"


def _on_shutdown(worker: Any) -> None:
    monitor = getattr(worker, "_saemon_monitor", None)
    if monitor is not None:
        monitor.close()
