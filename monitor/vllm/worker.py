"""The monitor inside one vLLM worker: tap -> attribute -> project -> ship, every step.

Created when the worker has loaded its model and saemon is configured for the engine
(vLLM's ``additional_config["saemon"]`` and/or the file named by ``SAEMON_CONFIG``).
Configuration problems (a pack that does not load, packs for another model, an architecture
the tap cannot reach, a tap that produced nothing) stop the engine with a message that says
how to fix them. Once running, a failure of the monitor itself is logged once, counted, and
the step's scores are dropped (and the prefix-cache score table reset, since the step's
rows may be missing from it): inference goes on.

Several packs are projected as one: their banks are merged per layer
(:meth:`LayerBanks.merge`), the tap reads the union of their layers, and each step ships
one batch per pack. With prefix caching on, a :class:`ScoreTable` keeps every computed
row's scores by KV slot and serves the positions vLLM took from its cache.

Requests sampled for the forensic view (``plugin.prompt_token_scores``) also ship their
scored prompt rows' per-token feature values (:func:`sampled_prompt_rows`): the rows'
scores where the step computed them anyway (the score table's), otherwise a projection of
those rows only; the device-to-host copy happens on the client's thread (``wire.encode``).
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.config import Settings, flatten, load_settings
from monitor.errors import SaemonError
from monitor.kernels import FeatureBank, LayerBanks, Summaries, project_layers, summarize_segments, token_scores
from monitor.pack import ProbePack, load_pack
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm import act, adapter
from monitor.vllm.act import AbortRule
from monitor.vllm.batch import Planner, StepLayout, StepPlan, external_id
from monitor.vllm.client import SidecarClient
from monitor.vllm.prefix import PrefixHasher, Recovered, ScoreTable
from monitor.vllm.tap import Tap
from monitor.vllm.wire import StepResult, Stream, TokenRows, encode

log = logging.getLogger(__name__)


def settings_for(vllm_config: Any) -> Settings | None:
    """The worker's settings, or None when saemon is not configured for this engine."""
    section = adapter.saemon_section(vllm_config)
    settings = load_settings(overrides=flatten("plugin", section or {}))
    return settings if settings.plugin.pack_paths else None


def load_packs(paths: Sequence[Path]) -> list[ProbePack]:
    """The packs, checked against each other: one model, distinct names."""
    if not paths:
        raise SaemonError("saemon: no probe pack is configured (plugin.pack / plugin.packs)")
    packs = [load_pack(path) for path in paths]  # a PackError names the file and the problem
    models = {(p.spec.model.name, p.spec.model.hidden_size, p.spec.model.num_layers) for p in packs}
    if len(models) > 1:
        listing = ", ".join(f"{p.path} ({p.spec.model.name})" for p in packs)
        raise SaemonError(f"saemon: the packs are for different models ({listing}); one engine serves one model")
    names = [p.name for p in packs]
    if len(set(names)) != len(names):
        raise SaemonError(f"saemon: two packs have the same name ({', '.join(map(str, paths))}); rename one")
    return packs


class WorkerMonitor:
    def __init__(self, worker: Any, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.vllm_config = worker.vllm_config
        self.packs: list[ProbePack] = load_packs(settings.plugin.pack_paths)
        self.model_name = settings.plugin.model_name or adapter.served_model_name(self.vllm_config)
        self.ships = False
        self.tap: Tap | None = None
        self.planner: Planner | None = None
        self.client: SidecarClient | None = None
        self.table: ScoreTable | None = None
        self.prefix_caching = adapter.prefix_caching(self.vllm_config)
        self._banks: LayerBanks | None = None
        self._streams: tuple[Stream, ...] = ()
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._step = 0
        self._calls_seen = 0
        self._check_calls = True
        self._failed_steps = 0
        self.abort = AbortRule([], [])
        #: External ids this worker stopped (action: abort), until their end marker
        self._aborted: set[str] = set()

    # -- start -----------------------------------------------------------------------------

    def loaded(self) -> None:
        """After load_model, before vLLM compiles or warms up the model."""
        adapter.check_engine_config(self.vllm_config)
        hidden, layers = adapter.model_shape(self.vllm_config)
        for pack in self.packs:
            pack.check_model(self.model_name, hidden, layers)
        runner = self.worker.model_runner
        model = runner.get_model()
        self._dtype = self.vllm_config.model_config.dtype
        self._device = torch.device(getattr(runner, "device", "cpu"))
        tapped = tuple(sorted({f.layer for pack in self.packs for f in pack.spec.features}))
        max_tokens = int(getattr(runner, "max_num_tokens", self.vllm_config.scheduler_config.max_num_batched_tokens))
        self.tap = Tap(tapped, max_tokens, hidden, self._dtype, self._device)
        adapter.install_tap(model, tapped, self.tap.capture)
        self._use_packs(self.packs)
        # With full CUDA graphs the top-level forward is replayed without Python: the tap still
        # writes (the copy is in the graph) but cannot count its calls.
        mode = getattr(self.vllm_config.compilation_config, "cudagraph_mode", None)
        self._check_calls = mode is None or not getattr(mode, "has_full_cudagraphs", lambda: False)()
        self.ships = adapter.tensor_parallel_rank() == 0
        if self.ships:
            specials = self._special_token_ids() if self.settings.plugin.exclude_special_tokens else ()
            self.planner = Planner(
                specials, gaps=self._reuses_prefixes, prompt_token_scores=self.settings.plugin.prompt_token_scores
            )
            self.client = self._client()
            self.client.start()
            # vLLM calls Worker.shutdown on a clean stop; this covers an interpreter exit without it
            atexit.register(self.close)
        log.info(
            "saemon: monitoring %s with %s at layers %s; prefix caching %s%s",
            self.model_name,
            ", ".join(f"{p.name}@{p.version} ({len(p.spec.features)} features)" for p in self.packs),
            list(tapped),
            "off" if not self.prefix_caching else f"on ({self.settings.plugin.prefix_cache} cached prompt scores)",
            "" if self.ships else " (this rank does not ship)",
        )

    @property
    def _reuses_prefixes(self) -> bool:
        return self.prefix_caching and self.settings.plugin.prefix_cache == "reuse"

    def _use_packs(self, packs: list[ProbePack]) -> None:
        """Merge the packs' banks and name their column ranges."""
        assert self.tap is not None
        per_pack = [pack.feature_banks(device=self._device, dtype=self._dtype) for pack in packs]
        read = {layer for banks in per_pack for layer, _, _ in banks}
        missing = sorted(read - set(self.tap.layers))
        if missing:
            raise SaemonError(
                f"saemon: the packs read layers {missing}, which the tap installed at start does not "
                f"capture (it taps {list(self.tap.layers)}); restart vLLM to monitor other layers"
            )
        unread = [layer for layer in self.tap.layers if layer not in read]
        if unread:  # one bank per tapped layer: a reload may read fewer layers than the tap
            hidden = self.tap.stacked.shape[-1]
            empty = FeatureBank.from_numpy(np.zeros((0, hidden), np.float32), [], [], [], self._device, self._dtype)
            per_pack.append([(layer, empty, np.zeros(0, np.int64)) for layer in unread])
        banks = LayerBanks.merge(per_pack)
        streams, first = [], 0
        for pack in packs:
            width = len(pack.spec.features)
            streams.append(Stream(self.model_name, pack.name, pack.version, first, width))
            first += width
        abort = AbortRule(packs, [(s.first, s.width or 0) for s in streams])
        if abort:  # at start and on a reload that brings abort probes: refuse what cannot stop
            runner = self.worker.model_runner
            adapter.check_stop_processor(runner)
            act.bind(lambda: adapter.batch_request_ids(runner))
        self.packs, self._banks, self._streams, self.abort = packs, banks, tuple(streams), abort

    def reload_packs(self, paths: Sequence[str] | None = None) -> list[str]:
        """Load the packs again (from ``paths``, default: the same files) and use them from the
        next step. All or nothing: a pack that fails to load, is for another model or reads a
        layer the tap does not capture leaves the current packs in place and raises. Scores
        the score table holds become unusable: cached prompt tokens from before the reload are
        reported unscored (reason RESET) rather than scored by an older pack; reset vLLM's
        prefix cache after a reload to have them recomputed instead."""
        files = [Path(p) for p in paths] if paths else [p.path for p in self.packs]
        packs = load_packs(files)
        hidden, layers = adapter.model_shape(self.vllm_config)
        for pack in packs:
            pack.check_model(self.model_name, hidden, layers)
        self._use_packs(packs)
        if self.table is not None:
            assert self._banks is not None
            self.table.reset(self._banks.num_features)
        log.info("saemon: reloaded packs %s", ", ".join(f"{p.name}@{p.version}" for p in packs))
        return [f"{p.name}@{p.version}" for p in packs]

    def _client(self) -> SidecarClient:
        plugin = self.settings.plugin
        token = None
        if plugin.auth_token_file is not None:
            token = plugin.auth_token_file.read_text().strip()
        roots = plugin.tls_ca_file.read_bytes() if plugin.tls_ca_file is not None else None
        target = plugin.sidecar or self.settings.grpc_listen
        return SidecarClient(
            target,
            encode=encode,
            batches_of=lambda result: len(result.streams),
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
        finished = getattr(scheduler_output, "finished_req_ids", ()) or ()
        try:
            self._step += 1
            plan = layout = None
            if num_tokens > 0:
                layout = adapter.read_layout(self.worker.model_runner, num_tokens, with_blocks=self._reuses_prefixes)
                plan = planner.plan(layout)
            ends = planner.finish(finished, token_ids=self.settings.plugin.send_token_ids)
            if self._aborted:
                for end in ends:
                    if end.request_id in self._aborted:
                        self._aborted.discard(end.request_id)
                        end.finish_reason = pb.FINISH_REASON_ABORT
            if plan is not None and layout is not None:
                self._project_and_ship(plan, layout, ends)
            elif ends:
                client.submit(
                    StepResult(self._step, time.time_ns(), [], [], np.zeros(0, np.int64), None, ends, self._streams)
                )
        except Exception:
            self._failed_steps += 1
            if self.table is not None and num_tokens > 0:
                self.table.reset()  # this step's rows may be missing from the table: never serve them
            if self.client is not None:
                self.client.count_dropped(len(self._streams))  # one batch per pack: saemon_events_dropped_total
            if self._failed_steps == 1:  # log once with the traceback, count every time
                log.exception(
                    "saemon: monitoring step %d failed; its scores are dropped, inference goes on", self._step
                )
        finally:
            if self.table is not None and finished:
                self.table.forget(finished)
            if self.abort and finished:
                act.forget(list(finished))
                self.abort.forget([external_id(w) for w in finished])

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

    def _project_and_ship(self, plan: StepPlan, layout: StepLayout, ends: list) -> None:
        assert self.tap is not None and self.client is not None and self._banks is not None
        banks = self._banks
        total = int(plan.seg_starts[-1])
        scores, recovered = (
            self._through_table(plan, layout, total) if self._reuses_prefixes and total else (None, None)
        )
        # summaries' argmax are rows of ``positions``: the step's rows, then the recovered ones
        positions = plan.positions[:total]
        segments: list = []
        parts: list[Summaries] = []
        if any(segment.num_tokens for segment in plan.segments):
            xs = self.tap.all_rows(total)  # a view: no copy
            seg_starts = torch.from_numpy(plan.seg_starts).to(xs.device)
            row_mask = torch.from_numpy(plan.row_mask).to(xs.device)
            parts.append(project_layers(xs, banks, seg_starts, row_mask, scores=scores))
            segments += plan.segments
        if recovered is not None and recovered.segments:
            found = summarize_segments(recovered.scores, recovered.starts, banks.threshold)
            parts.append(Summaries(found.max, found.argmax + total, found.sum, found.count))
            segments += recovered.segments
            positions = np.concatenate([positions, recovered.positions])
        unscored = recovered.unscored if recovered is not None else []
        rows: list[TokenRows] = []
        if plan.token_rows:
            rows.append(sampled_prompt_rows(plan, self.tap.all_rows(total), banks, scores))
        if recovered is not None:
            served = served_prompt_rows(plan, recovered)
            if served is not None:
                rows.append(served)
        if self.settings.plugin.capture_dir is not None and total:
            self._capture(plan, total)
        if not parts and not ends and not unscored:
            return
        summaries = Summaries.cat(parts) if parts else None
        if self.abort:
            self.abort.learn(plan.policies)
            if summaries is not None:
                self._decide_aborts(segments, summaries, positions)
        self.client.submit(
            StepResult(
                step=self._step,
                produced_unix_nanos=time.time_ns(),
                segments=segments,
                keep=[i for i, segment in enumerate(segments) if segment.num_tokens],
                positions=positions,
                summaries=summaries,
                ends=ends,
                streams=self._streams,
                unscored=unscored,
                token_scores=rows,
                policies=plan.policies,
            )
        )

    def _decide_aborts(self, segments: list, summaries: Summaries, positions: np.ndarray) -> None:
        """The abort probes' rule on this step (host copies of the summaries: a device sync
        on a GPU, paid only when a pack has abort probes); a request that trips one is
        stopped at its next sampled token."""
        assert self.planner is not None
        host = tuple(t.cpu().numpy() for t in (summaries.max, summaries.argmax, summaries.sum, summaries.count))
        fired = self.abort.observe(segments, host, positions)
        if not fired:
            return
        workers = {track.external: worker_id for worker_id, track in self.planner.tracks.items()}
        for request_id, probe, position in fired:
            worker_id = workers.get(request_id)
            if worker_id is None or request_id in self._aborted:
                continue
            act.stop(worker_id)
            self._aborted.add(request_id)
            log.info("saemon: probe %s fired on request %s at token %d: stopping it", probe, request_id, position)

    def _through_table(self, plan: StepPlan, layout: StepLayout, total: int) -> tuple[torch.Tensor, Recovered | None]:
        """Prefix caching: every computed row's scores go to the table (duplicates too: a
        recomputed row's KV was written to a new slot), and the positions vLLM served from its
        cache come back. Returns the step's per-row scores (the projection reuses them) and
        what the table recovered for the step's gaps."""
        assert self.tap is not None and self._banks is not None and layout.block_table is not None
        table = self.table or self._make_table()
        scores = token_scores(self.tap.all_rows(total), self._banks, total)
        device_slots = adapter.slot_mapping(self.worker.model_runner, total) if scores.is_cuda else None
        # Written before the gaps are read: vLLM lets a request hit blocks that another
        # request of the same step is computing (their KV is written earlier in the same
        # forward), so a gap may be served by this very step's rows.
        table.write(table.layout_slots(layout, total), table.row_tags(layout, total), scores, device_slots)
        return scores, table.recover(plan.gaps, layout.block_table) if plan.gaps else None

    def _make_table(self) -> ScoreTable:
        """The score table, made at the first step (vLLM sizes its KV cache after load_model)."""
        assert self._banks is not None
        slots, block_size = adapter.kv_slots(self.worker.model_runner, self.vllm_config)
        self.table = ScoreTable(slots, self._banks.num_features, block_size, self._device, PrefixHasher())
        log.info(
            "saemon: prefix caching is on: keeping cached prompt tokens' scores by KV slot "
            "(%d slots x %d features, %.1f MiB)",
            slots,
            self._banks.num_features,
            self.table.nbytes / 2**20,
        )
        return self.table

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


def sampled_prompt_rows(plan: StepPlan, xs: torch.Tensor, banks: LayerBanks, scores: torch.Tensor | None) -> TokenRows:
    """The per-token feature values of the sampled requests' scored prompt rows
    (``plan.token_rows``): gathered from ``scores`` (the step's per-row scores, when it made
    them) or projected from those rows of ``xs [L, T, d]`` alone. Device operations only:
    nothing waits for the result here."""
    picked = np.concatenate([p.rows for p in plan.token_rows])
    index = torch.from_numpy(picked).to(xs.device)
    if scores is not None:
        values = scores.index_select(0, index.to(scores.device))
    else:
        values = token_scores(xs.index_select(1, index), banks, len(picked))
    starts = np.cumsum([0] + [len(p.rows) for p in plan.token_rows]).tolist()
    groups = [(p.request_id, pb.TOKEN_SCOPE_PROMPT) for p in plan.token_rows]
    return TokenRows(groups, starts, plan.positions[picked], values)


def served_prompt_rows(plan: StepPlan, recovered: Recovered) -> TokenRows | None:
    """The prompt rows of sampled requests that the score table served this step (their
    scores are at hand; a position it could not serve is counted unscored and has none)."""
    wanted = {gap.external for gap in plan.gaps if gap.sampled}
    if not wanted:
        return None
    chosen = [
        k
        for k, segment in enumerate(recovered.segments)
        if segment.request_id in wanted and segment.scope == pb.TOKEN_SCOPE_PROMPT
    ]
    if not chosen:
        return None
    groups = [(recovered.segments[k].request_id, pb.TOKEN_SCOPE_PROMPT) for k in chosen]
    if len(chosen) == len(recovered.segments):
        return TokenRows(groups, recovered.starts, recovered.positions, recovered.scores)
    picked = np.concatenate([np.arange(recovered.starts[k], recovered.starts[k + 1]) for k in chosen])
    starts = np.cumsum([0] + [recovered.starts[k + 1] - recovered.starts[k] for k in chosen]).tolist()
    index = torch.from_numpy(picked).to(recovered.scores.device)
    return TokenRows(groups, starts, recovered.positions[picked], recovered.scores.index_select(0, index))
