"""``saemon demo``: the embedded default end to end on this machine.

Provisions the default model if needed, serves it with vLLM (CPU build on a machine without
a GPU), asks it a question through the OpenAI-compatible chat API and prints the answer.
"""

from __future__ import annotations

import logging
from typing import TextIO

from monitor import model
from monitor.config import Settings
from monitor.vllm_server import VllmServer

log = logging.getLogger(__name__)


def run(settings: Settings, out: TextIO) -> int:
    """Run the demo; returns the process exit code (0 when the model answered correctly)."""
    if settings.model.path is None:
        path = model.pull(settings)
    else:
        path = model.model_path(settings)
    print(f"saemon demo: serving {settings.model.name} from {path}", file=out)
    mode = "eager" if settings.vllm.enforce_eager else "compiled"
    print(f"  starting vLLM ({mode}, dtype {settings.vllm.dtype}); this takes a minute on 2 cores", file=out, flush=True)
    server = VllmServer(
        path,
        settings.model.name,
        settings.vllm,
        settings.logs_dir / "demo-vllm.log",
    )
    with server:
        print(f"  vLLM ready at {server.url} after {server.startup_seconds:.0f} s", file=out, flush=True)
        answer = server.chat(model.CHECK_QUESTION, max_tokens=32, request_id="saemon-demo-1")
    print(f"\n  user:      {model.CHECK_QUESTION}\n  assistant: {answer}\n", file=out)
    if model.CHECK_ANSWER not in answer:
        print(
            f"saemon demo: FAILED: the answer does not mention {model.CHECK_ANSWER}. "
            f"The vLLM log is {server.log_path}.",
            file=out,
        )
        return 1
    print("saemon demo: OK", file=out)
    return 0
