"""Synthetic probe packs and step batches for sidecar tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.pack import FeatureSpec, ModelBinding, PackSpec, ProbePack, ProbeSpec, save_pack
from monitor.proto.saemon.v1 import monitor_pb2 as pb

MODEL = ModelBinding(name="SmolLM2-135M-Instruct", hidden_size=576, num_layers=30)


def write_pack(
    directory: Path,
    name: str = "safety",
    version: str = "1",
    probes: list[dict] | None = None,
    features: list[dict] | None = None,
    model: ModelBinding = MODEL,
) -> ProbePack:
    """A pack with features f0, f1 (layer 14) and the given probes (defaults: one of each kind)."""
    features = features or [
        {"name": "f0", "layer": 14, "threshold": 0.5},
        {
            "name": "f1",
            "layer": 14,
            "threshold": 0.5,
            "activation": "relu",
            "source": "sae_latent",
            "sae": "test",
            "latent": 7,
        },
    ]
    probes = probes or [
        {
            "name": f"{name}_max",
            "concept": "deception",
            "features": ["f0"],
            "aggregation": "max",
            "threshold": 0.8,
            "severity": "critical",
        },
        {
            "name": f"{name}_mean",
            "concept": "deception",
            "features": ["f0", "f1"],
            "aggregation": "mean",
            "threshold": 0.5,
            "min_tokens": 4,
            "hysteresis": 0.1,
        },
    ]
    spec = PackSpec(
        pack=name,
        version=version,
        model=model,
        weights=f"{name}.safetensors",
        features=[FeatureSpec(**f) for f in features],
        probes=[ProbeSpec(**p) for p in probes],
    )
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((len(features), model.hidden_size)).astype(np.float32)
    return save_pack(spec, directions, np.zeros(len(features), np.float32), directory / f"{name}.yaml")


def summary(
    request_id: str,
    values: list[float],
    position: int,
    n: int = 1,
    scope: int = pb.TOKEN_SCOPE_RESPONSE,
    sums: list[float] | None = None,
    counts: list[int] | None = None,
) -> pb.RequestSummary:
    """n tokens from ``position`` whose per-feature max is ``values`` (sum = max * n by default)."""
    return pb.RequestSummary(
        request_id=request_id,
        scope=scope,
        first_position=position,
        num_tokens=n,
        max=values,
        argmax_position=[position] * len(values),
        sum=sums if sums is not None else [v * n for v in values],
        count_above=counts if counts is not None else [n if v > 0.5 else 0 for v in values],
    )


def batch(
    requests: list[pb.RequestSummary],
    ends: list[pb.RequestEnd] = (),
    pack: str = "safety",
    version: str = "1",
    step: int = 0,
    produced: int = 0,
    model: str = "SmolLM2-135M-Instruct",
) -> pb.StepBatch:
    return pb.StepBatch(
        model_name=model,
        pack=pack,
        pack_version=version,
        step=step,
        produced_unix_nanos=produced,
        requests=requests,
        ends=list(ends),
    )


def end(request_id: str, reason: int = pb.FINISH_REASON_STOP) -> pb.RequestEnd:
    return pb.RequestEnd(request_id=request_id, finish_reason=reason)
