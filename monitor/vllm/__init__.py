"""saemon's vLLM plugin, loaded through the ``vllm.general_plugins`` entry point.

vLLM calls ``register()`` in every one of its processes (API server, engine core, each
worker) before the model is built. It must stay cheap and must not touch vLLM unless
monitoring is configured: this build has no tap yet, so there is nothing to configure and
``register()`` only records that it ran. The residual-stream tap, the batch layout reader
and the shipper will live in their own modules beside this one and be imported lazily from
here.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_registered = False


def register() -> None:
    """vLLM's plugin hook: idempotent, and a no-op when monitoring is not configured."""
    global _registered
    if _registered:
        return
    _registered = True
    log.debug("saemon vLLM plugin loaded; monitoring is not configured, nothing patched")


def is_registered() -> bool:
    """Whether vLLM (or anything else) has called register() in this process."""
    return _registered
