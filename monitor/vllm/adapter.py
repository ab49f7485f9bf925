"""Every vLLM internal the plugin touches, in one place, for vLLM 0.32 / 0.33 (V1 engine).

vLLM has no public per-forward observer API in these versions. What the plugin relies on:
``Worker.load_model`` / ``Worker.execute_model`` (``vllm/v1/worker/gpu_worker.py``; the CPU
worker subclasses it), the model runner's batch layout after ``execute_model`` (V1 runner:
``input_batch.req_ids``, ``query_start_loc.np``, ``positions``; runner V2:
``execute_model_state.input_batch``), its per-request state (``runner.requests``), and the
EAGLE-3 aux-hidden-state path of Llama-family models (``set_aux_hidden_state_layers``: the
inner model then returns ``(hidden, [residual after each chosen layer])`` from inside the
compiled graph). Anything missing raises an error naming the vLLM version.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.errors import SaemonError
from monitor.vllm.batch import StepLayout

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("0.32.", "0.33.")
_PATCHED = "_saemon_patched"
_REQUEST_VIEWS = "_saemon_request_views"


class UnsupportedVllm(SaemonError):
    """The running vLLM lacks an internal the plugin needs."""


def vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "unknown")


def check_version() -> None:
    version = vllm_version()
    if not version.startswith(SUPPORTED_VERSIONS):
        log.warning(
            "saemon's vLLM plugin was written for vLLM %s; this is %s. It checks every "
            "internal it uses and fails loudly if one is missing.",
            "/".join(v.rstrip(".") for v in SUPPORTED_VERSIONS),
            version,
        )


def patch_worker(
    on_loaded: Callable[[Any], None],
    on_step: Callable[[Any, Any], None],
    on_shutdown: Callable[[Any], None],
    on_control: Callable[[Any, str, Any], Any],
) -> bool:
    """Wrap Worker.load_model, execute_model and shutdown once and add the control method;
    False if already done."""
    try:
        from vllm.v1.worker.gpu_worker import Worker
    except ImportError as exc:
        raise UnsupportedVllm(
            f"vLLM {vllm_version()}: cannot import vllm.v1.worker.gpu_worker.Worker ({exc}); "
            "saemon needs vLLM 0.32/0.33 with the V1 engine."
        ) from None
    if getattr(Worker, _PATCHED, False):
        return False
    for name in ("load_model", "execute_model"):
        if not callable(getattr(Worker, name, None)):
            raise UnsupportedVllm(f"vLLM {vllm_version()}: Worker.{name} is missing.")

    original_load = Worker.load_model
    original_execute = Worker.execute_model

    @functools.wraps(original_load)
    def load_model(self, *args, **kwargs):
        result = original_load(self, *args, **kwargs)
        on_loaded(self)
        return result

    @functools.wraps(original_execute)
    def execute_model(self, scheduler_output, *args, **kwargs):
        result = original_execute(self, scheduler_output, *args, **kwargs)
        on_step(self, scheduler_output)
        return result

    Worker.load_model = load_model
    Worker.execute_model = execute_model
    # The control plane: LLM.collective_rpc("saemon_reload_packs", args=([paths],)) and
    # the engine's collective_rpc reach every worker's method of this name.
    Worker.saemon_reload_packs = lambda self, paths=None: on_control(self, "reload_packs", paths)
    original_shutdown = getattr(Worker, "shutdown", None)
    if callable(original_shutdown):

        @functools.wraps(original_shutdown)
        def shutdown(self, *args, **kwargs):
            on_shutdown(self)
            return original_shutdown(self, *args, **kwargs)

        Worker.shutdown = shutdown
    setattr(Worker, _PATCHED, True)
    return True


def saemon_section(vllm_config: Any) -> dict[str, Any] | None:
    """The ``saemon`` entry of vLLM's additional_config (hashed into vLLM's compile cache)."""
    additional = getattr(vllm_config, "additional_config", None) or {}
    section = additional.get("saemon") if isinstance(additional, dict) else None
    return section if isinstance(section, dict) else None


def served_model_name(vllm_config: Any) -> str:
    name = vllm_config.model_config.served_model_name
    if isinstance(name, list | tuple):
        name = name[0]
    return str(name or vllm_config.model_config.model)


def model_shape(vllm_config: Any) -> tuple[int, int]:
    hf = vllm_config.model_config.hf_config
    text = getattr(hf, "text_config", None) or hf
    return int(text.hidden_size), int(text.num_hidden_layers)


def check_engine_config(vllm_config: Any) -> None:
    """Refuse settings under which the tap would miss or misattribute rows."""
    problems = []
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism is not supported; use tensor parallelism")
    if getattr(vllm_config.parallel_config, "decode_context_parallel_size", 1) > 1 and prefix_caching(vllm_config):
        problems.append(
            "decode context parallelism interleaves KV slots across ranks, which the prefix-cache "
            "score table does not follow; turn prefix caching off or use tensor parallelism"
        )
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is not None:
        problems.append(
            "speculative decoding adds rejected rows and (EAGLE-3) shares the aux hidden-state "
            "path the tap uses; disable it"
        )
    if problems:
        raise SaemonError("saemon cannot monitor this vLLM engine: " + "; ".join(problems) + ".")


def prefix_caching(vllm_config: Any) -> bool:
    return bool(getattr(vllm_config.cache_config, "enable_prefix_caching", False))


def kv_slots(runner: Any, vllm_config: Any) -> tuple[int, int]:
    """(KV slots, kernel block size) of the cache group the score table mirrors, once the
    KV cache exists (after the first step's setup). The slot of position p of the request
    in batch row i is ``block_table[i, p // block_size] * block_size + p % block_size``."""
    tables = getattr(getattr(getattr(runner, "input_batch", None), "block_table", None), "block_tables", None)
    config = getattr(runner, "kv_cache_config", None)
    if not tables or config is None:
        raise UnsupportedVllm(
            f"vLLM {vllm_version()}: the model runner ({type(runner).__name__}) has no "
            "input_batch.block_table or kv_cache_config, which the prefix-cache score table "
            "reads (model runner V2 is not supported with prefix caching yet). Start vLLM with "
            "--no-enable-prefix-caching or the V1 model runner."
        )
    groups = config.kv_cache_groups
    kinds = [type(group.kv_cache_spec).__name__ for group in groups]
    if len(groups) != 1 or kinds[0] != "FullAttentionSpec":
        raise UnsupportedVllm(
            f"vLLM {vllm_version()}: KV cache groups {kinds}; the prefix-cache score table "
            "supports one full-attention group. Start vLLM with --no-enable-prefix-caching."
        )
    return int(config.num_blocks) * int(vllm_config.cache_config.block_size), int(tables[0].block_size)


def block_table(runner: Any, num_requests: int) -> np.ndarray:
    """The host block table's first rows (the batch's requests, in row order)."""
    return runner.input_batch.block_table.block_tables[0].block_table.np[:num_requests]


def slot_mapping(runner: Any, total: int) -> torch.Tensor:
    """The KV slot of each of the step's rows on the model's device, as vLLM computed it for
    this step's KV writes (valid until the next step prepares its inputs)."""
    return runner.input_batch.block_table.block_tables[0].slot_mapping.gpu[:total]


def patch_scheduler(recompute_prefixes: Callable[[Any], bool]) -> None:
    """``plugin.prefix_cache: recompute`` makes every request skip prefix-cache reads (still
    writing the cache), as if each had ``skip_reading_prefix_cache``: for deployments that
    want every token computed in front of the tap. Read per engine from its
    additional_config in the engine-core process, where the scheduler runs."""
    try:
        from vllm.v1.core.sched.scheduler import Scheduler
    except ImportError:
        return  # not the V1 engine: check_engine_config / the worker will say so
    if getattr(Scheduler, _PATCHED, False):
        return
    original = Scheduler.add_request

    @functools.wraps(original)
    def add_request(self, request, *args, **kwargs):
        recompute = getattr(self, "_saemon_recompute", None)
        if recompute is None:
            recompute = self._saemon_recompute = bool(recompute_prefixes(self.vllm_config))
        if recompute:
            request.skip_reading_prefix_cache = True
        return original(self, request, *args, **kwargs)

    Scheduler.add_request = add_request
    setattr(Scheduler, _PATCHED, True)


def tensor_parallel_rank() -> int:
    from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

    return int(get_tensor_model_parallel_rank())


def install_tap(model: Any, layers: tuple[int, ...], capture: Callable[[list], None]) -> None:
    """Make ``model`` hand the residual stream after ``layers`` to ``capture`` every forward.

    aux id k is the residual after decoder layer k-1 (id 0 = embeddings), i.e. HF
    ``hidden_states[k]``; a pack's layer L (resid_post) is aux id L + 1. The top-level
    forward is not compiled, so the wrapper runs as Python on every call while the inner
    model, which produces the aux outputs, stays compiled.
    """
    if not callable(getattr(model, "set_aux_hidden_state_layers", None)):
        raise UnsupportedVllm(
            f"vLLM {vllm_version()}: {type(model).__name__} has no set_aux_hidden_state_layers "
            "(the EAGLE-3 aux hidden-state path). saemon taps Llama-family models (Llama, "
            "Qwen2, Granite, ...) this way; other architectures are not supported yet."
        )
    aux_ids = tuple(layer + 1 for layer in layers)
    model.set_aux_hidden_state_layers(aux_ids)
    inner_forward = model.forward

    def forward(self, *args, **kwargs):
        output = inner_forward(*args, **kwargs)
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list):
            hidden, aux = output
            capture(aux)
            return hidden
        return output

    model.forward = types.MethodType(forward, model)


class _LiveRequest:
    """The planner's view of one entry of ``runner.requests`` (a CachedRequestState), read
    live: the runner appends to ``output_token_ids`` and replaces it on resumption."""

    __slots__ = ("state",)

    def __init__(self, state: Any) -> None:
        self.state = state

    @property
    def prompt_len(self) -> int:
        return len(self.state.prompt_token_ids or ())

    @property
    def max_tokens(self) -> int | None:
        return getattr(getattr(self.state, "sampling_params", None), "max_tokens", None)

    @property
    def prompt_token_ids(self) -> Sequence[int]:
        return self.state.prompt_token_ids or ()

    @property
    def output_token_ids(self) -> Sequence[int]:
        return self.state.output_token_ids

    @property
    def policy(self) -> str:
        """The saemon policy the request was sent with: ``extra_args["saemon_policy"]``
        (the OpenAI server's ``vllm_xargs``), or ``extra_args["saemon"]["policy"]``."""
        extra = getattr(getattr(self.state, "sampling_params", None), "extra_args", None) or {}
        policy = extra.get("saemon_policy")
        if policy is None and isinstance(extra.get("saemon"), dict):
            policy = extra["saemon"].get("policy")
        return policy if isinstance(policy, str) else ""


class _RunnerRequests(Mapping[str, _LiveRequest]):
    """``runner.requests`` as the planner reads it, one view per state object (made once)."""

    def __init__(self, states: dict[str, Any]) -> None:
        self.states = states
        self.views: dict[str, _LiveRequest] = {}

    def __getitem__(self, worker_id: str) -> _LiveRequest:
        state = self.states[worker_id]
        view = self.views.get(worker_id)
        if view is None or view.state is not state:
            if len(self.views) > 4 * len(self.states) + 64:  # forget finished requests
                self.views = {k: v for k, v in self.views.items() if k in self.states}
            view = self.views[worker_id] = _LiveRequest(state)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)


def _requests_of(runner: Any) -> _RunnerRequests:
    views = getattr(runner, _REQUEST_VIEWS, None)
    if views is None or views.states is not runner.requests:
        views = _RunnerRequests(runner.requests)
        setattr(runner, _REQUEST_VIEWS, views)
    return views


def read_layout(runner: Any, num_tokens: int, *, with_blocks: bool = False) -> StepLayout:
    """This step's rows, from either model-runner layout (with the block table: V1 only)."""
    state = getattr(runner, "execute_model_state", None)
    batch = getattr(state, "input_batch", None)
    if batch is not None and hasattr(batch, "query_start_loc_np"):  # model runner V2
        n = len(batch.req_ids)
        qsl = np.asarray(batch.query_start_loc_np[: n + 1])
        req_ids = list(batch.req_ids[:n])
        positions = np.asarray(batch.positions_np[:num_tokens]) if hasattr(batch, "positions_np") else None
    else:
        input_batch = getattr(runner, "input_batch", None)
        if input_batch is None or not hasattr(runner, "query_start_loc"):
            raise UnsupportedVllm(
                f"vLLM {vllm_version()}: the model runner ({type(runner).__name__}) has neither "
                "input_batch/query_start_loc (V1) nor execute_model_state.input_batch (V2)."
            )
        n = input_batch.num_reqs
        req_ids = list(input_batch.req_ids[:n])
        qsl = np.asarray(runner.query_start_loc.np[: n + 1])
        positions = _v1_positions(runner, input_batch, qsl, num_tokens)
    if positions is None:
        raise UnsupportedVllm(f"vLLM {vllm_version()}: cannot find the positions of this step's rows.")
    blocks = block_table(runner, len(req_ids)) if with_blocks else None
    return StepLayout(req_ids, qsl, positions, _requests_of(runner), blocks)


def _v1_positions(runner: Any, input_batch: Any, qsl: np.ndarray, num_tokens: int) -> np.ndarray:
    """Absolute position of each row: the runner's own positions when they are on the host
    (CPU runner), else num_computed_tokens + offset, which is what the runner computes
    (no speculative decoding: the plugin refuses it)."""
    positions = getattr(runner, "positions", None)
    if positions is not None and getattr(positions, "device", None) is not None and positions.device.type == "cpu":
        return positions.numpy()[:num_tokens]
    starts = np.asarray(input_batch.num_computed_tokens_cpu[: len(qsl) - 1], dtype=np.int64)
    lengths = np.diff(qsl).astype(np.int64)
    offsets = np.arange(int(qsl[-1]), dtype=np.int64) - np.repeat(qsl[:-1].astype(np.int64), lengths)
    return np.repeat(starts, lengths) + offsets


def batch_request_ids(runner: Any) -> list[str | None]:
    """The persistent batch's request ids in the order the sampler's logits rows follow
    (V1 runner: ``input_batch.req_ids``)."""
    return runner.input_batch.req_ids


def check_stop_processor(runner: Any) -> None:
    """``action: abort`` needs saemon's logits processor in this engine (the
    ``vllm.logits_processors`` entry point of the installed saemon) and the V1 runner's
    batch order; otherwise a clear error at load, not probes that never stop anything."""
    from monitor.vllm.stop import StopFlagged

    input_batch = getattr(runner, "input_batch", None)
    processors = getattr(getattr(input_batch, "logitsprocs", None), "non_argmax_invariant", None)
    if input_batch is None or not hasattr(input_batch, "req_ids") or processors is None:
        raise UnsupportedVllm(
            f"vLLM {vllm_version()}: action abort needs the V1 model runner's input_batch and its logits "
            f"processors; {type(runner).__name__} has neither. Use action alert, or the V1 runner."
        )
    if not any(isinstance(p, StopFlagged) for p in processors):
        raise UnsupportedVllm(
            "saemon: a pack has action abort but vLLM did not load saemon's logits processor "
            "(entry point vllm.logits_processors: saemon). Reinstall saemon (pip install saemon) in "
            "vLLM's environment, or pass --logits-processors monitor.vllm.stop:StopFlagged."
        )
