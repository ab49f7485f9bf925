"""The monitor inside one vLLM worker: tap -> attribute -> project -> ship, every step.

Created when the worker has loaded its model and saemon is configured for the engine
(vLLM's ``additional_config["saemon"]`` and/or the file named by ``SAEMON_CONFIG``).
Configuration problems (a pack for another model, prefix caching on, an architecture the tap
cannot reach, a tap that produced nothing) stop the engine with a message that says how to
fix them. Once running, a failure of the monitor itself is logged once, counted, and the
step's scores are dropped: inference goes on.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.config import Settings, flatten, load_settings
from monitor.errors import SaemonError
from monitor.kernels import LayerBanks, project_layers
from monitor.pack import ProbePack, load_pack
from monitor.vllm import adapter
from monitor.vllm.batch import Planner, StepPlan
from monitor.vllm.client import SidecarClient
from monitor.vllm.tap import Tap
from monitor.vllm.wire import StepResult, Stream

log = logging.getLogger(__name__)


def settings_for(vllm_config: Any) -> Settings | None:
    """The worker's settings, or None when saemon is not configured for this engine."""
    section = adapter.saemon_section(vllm_config)
    settings = load_settings(overrides=flatten("plugin", section or {}))
    return settings if settings.plugin.pack is not None else None


class WorkerMonitor:
    def __init__(self, worker: Any, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.vllm_config = worker.vllm_config
        if settings.plugin.pack is None:
            raise SaemonError("saemon: plugin.pack is not set; the worker monitor needs a probe pack")
        self.pack: ProbePack = load_pack(settings.plugin.pack)
        self.model_name = settings.plugin.model_name or adapter.served_model_name(self.vllm_config)
        self.ships = False
        self.tap: Tap | None = None
        self.planner: Planner | None = None
        self.client: SidecarClient | None = None
        self._banks: LayerBanks | None = None
        self._step = 0
        self._calls_seen = 0
        self._check_calls = True
        self._failed_steps = 0

    # -- start -----------------------------------------------------------------------------

    def loaded(self) -> None:
        """After load_model, before vLLM compiles or warms up the model."""
        adapter.check_engine_config(self.vllm_config)
        hidden, layers = adapter.model_shape(self.vllm_config)
        self.pack.check_model(self.model_name, hidden, layers)
        runner = self.worker.model_runner
        model = runner.get_model()
        dtype = self.vllm_config.model_config.dtype
        device = torch.device(getattr(runner, "device", "cpu"))
        pack_layers = tuple(sorted({f.layer for f in self.pack.spec.features}))
        max_tokens = int(getattr(runner, "max_num_tokens", self.vllm_config.scheduler_config.max_num_batched_tokens))
        self.tap = Tap(pack_layers, max_tokens, hidden, dtype, device)
        adapter.install_tap(model, pack_layers, self.tap.capture)
        self._banks = LayerBanks.stack(self.pack.feature_banks(device=device, dtype=dtype))
        if self._banks.layers != self.tap.layers:
            raise SaemonError(
                f"saemon: the pack's banks are for layers {self._banks.layers}, the tap has {self.tap.layers}"
            )
        # With full CUDA graphs the top-level forward is replayed without Python: the tap still
        # writes (the copy is in the graph) but cannot count its calls.
        mode = getattr(self.vllm_config.compilation_config, "cudagraph_mode", None)
        self._check_calls = mode is None or not getattr(mode, "has_full_cudagraphs", lambda: False)()
        self.ships = adapter.tensor_parallel_rank() == 0
        if self.ships:
            self.planner = Planner(self._special_token_ids() if self.settings.plugin.exclude_special_tokens else ())
            self.client = self._client()
            self.client.start()
            # vLLM calls Worker.shutdown on a clean stop; this covers an interpreter exit without it
            atexit.register(self.close)
        log.info(
            "saemon: monitoring %s with pack %s@%s (%d features at layers %s)%s",
            self.model_name,
            self.pack.name,
            self.pack.version,
            len(self.pack.spec.features),
            list(pack_layers),
            "" if self.ships else " (this rank does not ship)",
        )

    def _client(self) -> SidecarClient:
        plugin = self.settings.plugin
        token = None
        if plugin.auth_token_file is not None:
            token = plugin.auth_token_file.read_text().strip()
        roots = plugin.tls_ca_file.read_bytes() if plugin.tls_ca_file is not None else None
        target = plugin.sidecar or self.settings.grpc_listen
        stream = Stream(self.model_name, self.pack.name, self.pack.version)
        return SidecarClient(
            target,
            encode=stream.encode,
            interval_seconds=plugin.ship_interval_seconds,
            queue_size=plugin.queue_size,
            token=token,
            root_certificates=roots,
        )

    def _special_token_ids(self) -> set[int]:
        from transformers import AutoTokenizer

        config = self.vllm_config.model_config
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, trust_remote_code=config.trust_remote_code)
        return set(tokenizer.all_special_ids)

    # -- every step --------------------------------------------------------------------------

    def step(self, scheduler_output: Any) -> None:
        num_tokens = int(scheduler_output.total_num_scheduled_tokens)
        if num_tokens > 0:
            self._verify_tap()
        planner, client = self.planner, self.client
        if not self.ships or planner is None or client is None:
            return
        try:
            self._step += 1
            plan = None
            if num_tokens > 0:
                layout = adapter.read_layout(self.worker.model_runner, num_tokens)
                plan = planner.plan(layout)
            ends = planner.finish(
                getattr(scheduler_output, "finished_req_ids", ()) or (), token_ids=self.settings.plugin.send_token_ids
            )
            if plan is not None and any(s.num_tokens for s in plan.segments):
                self._project_and_ship(plan, ends)
            elif ends:
                client.submit(StepResult(self._step, time.time_ns(), [], [], np.zeros(0, np.int64), None, ends))
        except Exception:
            self._failed_steps += 1
            if self.client is not None:
                self.client.count_dropped()  # reaches saemon_events_dropped_total
            if self._failed_steps == 1:  # log once with the traceback, count every time
                log.exception(
                    "saemon: monitoring step %d failed; its scores are dropped, inference goes on", self._step
                )

    def _verify_tap(self) -> None:
        assert self.tap is not None
        if self._check_calls and self.tap.calls == self._calls_seen:
            raise SaemonError(
                "saemon: vLLM ran a forward pass but the residual-stream tap did not see it. The "
                "compiled model was probably loaded from a compile cache built without the tap. "
                "Put the saemon settings in --additional-config (it is part of vLLM's cache key) "
                "or clear VLLM_CACHE_ROOT, then restart."
            )
        self._calls_seen = self.tap.calls

    def _project_and_ship(self, plan: StepPlan, ends: list) -> None:
        assert self.tap is not None and self.client is not None and self._banks is not None
        total = int(plan.seg_starts[-1])
        xs = self.tap.all_rows(total)
        seg_starts = torch.from_numpy(plan.seg_starts).to(xs.device)
        row_mask = torch.from_numpy(plan.row_mask).to(xs.device)
        summaries = project_layers(xs, self._banks, seg_starts, row_mask)
        if self.settings.plugin.capture_dir is not None:
            self._capture(plan, total)
        self.client.submit(
            StepResult(
                step=self._step,
                produced_unix_nanos=time.time_ns(),
                segments=plan.segments,
                keep=[i for i, segment in enumerate(plan.segments) if segment.num_tokens],
                positions=plan.positions,
                summaries=summaries,
                ends=ends,
            )
        )

    def _capture(self, plan: StepPlan, total: int) -> None:
        """Debugging and forensics: the scored rows of this step, with their attribution."""
        from safetensors.torch import save_file

        assert self.tap is not None and self.settings.plugin.capture_dir is not None
        directory = Path(self.settings.plugin.capture_dir)
        directory.mkdir(parents=True, exist_ok=True)
        mask = torch.from_numpy(plan.row_mask[:total])
        owners, scopes = [], []
        for segment, lo, hi in zip(plan.segments, plan.seg_starts[:-1], plan.seg_starts[1:], strict=True):
            owners += [segment.request_id] * int(hi - lo)
            scopes += [segment.scope] * int(hi - lo)
        keep = plan.row_mask[:total]
        tensors = {
            f"layer{layer}": self.tap.rows_of(layer, total)[mask].float().cpu().contiguous()
            for layer in self.tap.layers
        }
        tensors["positions"] = torch.from_numpy(plan.positions[:total][keep].astype(np.int64))
        tensors["scopes"] = torch.tensor([s for s, k in zip(scopes, keep, strict=True) if k], dtype=torch.int64)
        metadata = {
            "requests": json.dumps([o for o, k in zip(owners, keep, strict=True) if k]),
            "step": str(self._step),
            "rows": str(total),  # rows the tap saw, duplicates and special tokens included
        }
        save_file(tensors, str(directory / f"step-{self._step:08d}.safetensors"), metadata=metadata)

    def close(self) -> None:
        """Flush what is queued for the sidecar (a few seconds at most); idempotent."""
        client, self.client = self.client, None
        if client is not None:
            client.close()
