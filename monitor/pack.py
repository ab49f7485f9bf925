"""Probe packs: what the monitor loads at runtime.

A pack is a YAML file bound to one model (name, hidden size, layer count) plus a small
safetensors file holding only the watched directions:

- ``directions``: float32 or float16 ``[F, hidden_size]``, one row per feature, in the
  YAML's feature order (the wire contract's arrays use the same order);
- ``bias``: ``[F]``.

A feature is one scalar per token, ``act(x . w + b)`` on the residual stream after decoder
layer ``layer`` (HF ``hidden_states[layer + 1]``). A probe folds one or more features
into a request-level score (``aggregation`` over the tokens of one ``scope``), compared
with a threshold calibrated at ``target_fpr`` on benign data. The sidecar only needs the
YAML; the plugin also needs the weights. Both load packs with :func:`load_pack`, which
validates everything and names the file, the field and the fix on any problem.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.errors import PackError

PACK_SUFFIXES = (".yaml", ".yml")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelBinding(_Spec):
    """The model a pack was made for; checked against the served model at start."""

    name: str = Field(min_length=1, description="Served model name (vLLM's model_name).")
    hidden_size: int = Field(gt=0, description="d_model: length of each direction.")
    num_layers: int = Field(gt=0, description="Decoder layers of the model.")


class FeatureSpec(_Spec):
    """One direction in the residual stream, and how its per-token value is activated."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    layer: int = Field(ge=0, description="Residual stream after this decoder layer (0-based).")
    activation: Literal["identity", "relu", "jumprelu"] = Field(
        "identity", description="identity for a linear probe; relu / jumprelu for SAE latents."
    )
    threshold: float = Field(
        0.0,
        description="Token threshold: count_above counts tokens whose activation exceeds it; "
        "the JumpReLU gate for jumprelu.",
    )
    source: Literal["linear_probe", "sae_latent"] = "linear_probe"
    sae: str | None = Field(None, description="For SAE latents: the SAE it came from.")
    latent: int | None = Field(None, ge=0, description="For SAE latents: its index in the SAE.")


Aggregation = Literal["max", "mean", "ema", "window_count"]


class HeldOutQuality(_Spec):
    """The probe's recipe measured on one source it was not fitted on (``saemon probes eval
    --held-out --record``): fitted on the concept's other sources, measured on this one's
    test split and the held-out controls; intervals are 95% bootstrap."""

    auroc: float | None = Field(None, ge=0, le=1)
    auroc_interval: tuple[float, float] | None = None
    recall: float | None = Field(None, ge=0, le=1, description="At `fpr` on the held-out controls.")
    recall_interval: tuple[float, float] | None = None
    fpr: float = Field(gt=0, lt=1)
    positives: int = Field(ge=0)
    negatives: int = Field(ge=0)
    controls: int = Field(ge=0)


class QualitySpec(_Spec):
    """Measured detection quality on held-out data (``saemon probes eval --record``)."""

    auroc: float | None = Field(None, ge=0, le=1, description="Concept examples, label 1 vs 0.")
    recall_at_threshold: float | None = Field(None, ge=0, le=1, description="Label-1 examples flagged.")
    fpr_at_threshold: float | None = Field(
        None, ge=0, le=1, description="Held-out benign control conversations flagged (compare target_fpr)."
    )
    negative_fpr_at_threshold: float | None = Field(
        None, ge=0, le=1, description="The concept's own label-0 examples flagged (honest answers, secure code)."
    )
    dataset: str | None = None
    split: str | None = None
    examples: int | None = Field(None, ge=0, description="Concept examples scored (label 1 and 0).")
    controls: int | None = Field(None, ge=0, description="Control examples scored.")
    by_dataset: dict[str, float] | None = Field(None, description="AUROC per source dataset of the concept.")
    data_sha256: dict[str, str] | None = Field(None, description="sha256 of each data file measured on.")
    held_out: dict[str, HeldOutQuality] | None = Field(
        None, description="Per source of the concept: the recipe fitted without it, measured on it."
    )


class ProbeSpec(_Spec):
    """A safety concept evaluated per request: features, aggregation, rule."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    concept: str = Field(min_length=1)
    features: list[str] = Field(min_length=1, description="Feature names; the score is their max.")
    weights: list[float] | None = Field(
        None,
        description="Per feature: the score is intercept + sum(weight x feature score), a "
        "logistic-regression probe over several features (SAE latents). Without: the max over features.",
    )
    intercept: float = 0.0
    aggregation: Aggregation = Field(
        "max",
        description="max: strongest token; mean: average over the scope's tokens; ema: "
        "exponential moving average over tokens; window_count: tokens above the feature "
        "threshold among the last window_tokens.",
    )
    ema_alpha: float = Field(0.1, gt=0, le=1, description="Weight of each new token in ema.")
    window_tokens: int = Field(32, gt=0, description="Window length for window_count.")
    scope: Literal["prompt", "response"] = "response"
    threshold: float = Field(description="Fires at score >= threshold (calibrated).")
    target_fpr: float | None = Field(
        None, gt=0, lt=1, description="False-positive rate the threshold was calibrated for."
    )
    min_tokens: int = Field(1, ge=1, description="Tokens in scope before the probe may fire.")
    decide: Literal["running", "end"] = Field(
        "running",
        description="running: fire as soon as the running score reaches the threshold; end: judge "
        "the score once, when the request ends (a whole-response mean, as such probes are fitted).",
    )
    hysteresis: float = Field(
        0.0, ge=0, description="Stops firing only when the score falls below threshold - hysteresis."
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    action: Literal["alert", "record", "abort"] = Field(
        "alert",
        description="alert: metrics, events, receivers; record: only the score; abort: also end the "
        "answer inside vLLM when the probe fires (needs decide: running and the response scope).",
    )
    quality: QualitySpec | None = None

    @model_validator(mode="after")
    def _finite(self) -> ProbeSpec:
        if not math.isfinite(self.threshold) or not math.isfinite(self.hysteresis):
            raise ValueError("threshold and hysteresis must be finite numbers")
        if self.action == "abort" and (self.decide != "running" or self.scope != "response"):
            raise ValueError(
                f"probe {self.name!r}: action abort stops an answer while it streams, so it needs "
                f"decide: running and scope: response (it has decide: {self.decide}, scope: {self.scope}); "
                "use action alert for a probe judged at the end or on the prompt"
            )
        if self.weights is not None:
            if len(self.weights) != len(self.features):
                raise ValueError(
                    f"weights has {len(self.weights)} entries for {len(self.features)} features: give one per feature"
                )
            if not all(math.isfinite(w) for w in self.weights) or not math.isfinite(self.intercept):
                raise ValueError("weights and intercept must be finite numbers")
        return self


class PackSpec(_Spec):
    """The YAML document of a pack."""

    pack: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    version: str = Field(min_length=1)
    description: str = ""
    model: ModelBinding
    hook_point: Literal["resid_post"] = Field(
        "resid_post", description="Where features read: the residual stream after the layer."
    )
    weights: str = Field(min_length=1, description="safetensors file, relative to the YAML.")
    features: list[FeatureSpec] = Field(min_length=1)
    probes: list[ProbeSpec] = Field(min_length=1)
    policies: dict[str, dict[str, Literal["alert", "record", "abort"]]] = Field(
        default_factory=dict,
        description="Per-request rules: a request sent with the policy's name (vLLM's vllm_xargs "
        '{"saemon_policy": "<name>"}) gets these actions for the named probes instead of their own.',
    )

    @model_validator(mode="after")
    def _consistent(self) -> PackSpec:
        feature_names = [f.name for f in self.features]
        duplicated = sorted(n for n, c in Counter(feature_names).items() if c > 1)
        if duplicated:
            raise ValueError(f"feature names must be unique; repeated: {duplicated}")
        probe_names = [p.name for p in self.probes]
        duplicated = sorted(n for n, c in Counter(probe_names).items() if c > 1)
        if duplicated:
            raise ValueError(f"probe names must be unique; repeated: {duplicated}")
        by_name = {p.name: p for p in self.probes}
        for policy, actions in self.policies.items():
            if not policy or len(policy) > 64 or not policy.isprintable():
                raise ValueError(f"policy name {policy[:64]!r}: 1 to 64 printable characters")
            unknown = sorted(set(actions) - set(by_name))
            if unknown:
                raise ValueError(f"policy {policy!r} names probes {unknown} that the pack does not have")
            for name, action in actions.items():
                probe = by_name[name]
                if action == "abort" and (probe.decide != "running" or probe.scope != "response"):
                    raise ValueError(
                        f"policy {policy!r} makes probe {name!r} abort, which needs decide: running and "
                        f"scope: response (it has decide: {probe.decide}, scope: {probe.scope})"
                    )
        known = set(feature_names)
        for probe in self.probes:
            unknown = [f for f in probe.features if f not in known]
            if unknown:
                raise ValueError(
                    f"probe {probe.name!r} uses features {unknown} that the pack does not define "
                    f"(defined: {feature_names})"
                )
        for feature in self.features:
            if not math.isfinite(feature.threshold):
                raise ValueError(f"feature {feature.name!r}: threshold must be finite")
            if feature.layer >= self.model.num_layers:
                raise ValueError(
                    f"feature {feature.name!r}: layer {feature.layer} does not exist in a "
                    f"{self.model.num_layers}-layer model (layers are 0..{self.model.num_layers - 1})"
                )
            if feature.activation == "jumprelu" and feature.threshold < 0:
                raise ValueError(f"feature {feature.name!r}: a JumpReLU threshold must be >= 0")
        return self


@dataclass(frozen=True)
class ProbePack:
    """A validated pack: its spec, where it came from, and (optionally) its weights."""

    spec: PackSpec
    path: Path
    directions: np.ndarray | None = None  # [F, hidden_size], float32
    bias: np.ndarray | None = None  # [F], float32

    @property
    def name(self) -> str:
        return self.spec.pack

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def feature_index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.spec.features)}

    def feature_banks(self, device="cpu", dtype=None) -> list[tuple[int, Any, np.ndarray]]:
        """Per layer: (layer, the projection's FeatureBank of that layer's features, their
        column indices in pack order). The plugin projects with these; so does the eval."""
        import torch

        from monitor.kernels import FeatureBank

        if self.directions is None or self.bias is None:
            raise PackError(f"probe pack {self.path}: loaded without its weights; feature banks need them")
        features = self.spec.features
        banks = []
        for layer in sorted({f.layer for f in features}):
            columns = np.array([i for i, f in enumerate(features) if f.layer == layer])
            bank = FeatureBank.from_numpy(
                self.directions[columns],
                self.bias[columns],
                [features[i].activation for i in columns],
                np.array([features[i].threshold for i in columns], dtype=np.float32),
                device=device,
                dtype=dtype or torch.float32,
            )
            banks.append((layer, bank, columns))
        return banks

    def check_model(self, model_name: str, hidden_size: int, num_layers: int) -> None:
        """Refuse to run this pack on a model it was not made for."""
        bound = self.spec.model
        problems = []
        if bound.hidden_size != hidden_size:
            problems.append(f"hidden size {bound.hidden_size} != the model's {hidden_size}")
        if bound.num_layers != num_layers:
            problems.append(f"{bound.num_layers} layers != the model's {num_layers}")
        if problems:
            raise PackError(
                f"probe pack {self.path}: made for {bound.name} but the served model "
                f"{model_name} differs: {'; '.join(problems)}. Use a pack made for {model_name} "
                "(see probes/<model>/) or make one with the probe tools."
            )


def load_pack(path: Path, *, with_weights: bool = True) -> ProbePack:
    """Load and validate one pack YAML (and its safetensors unless ``with_weights`` is False)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PackError(f"probe pack {path}: cannot read it ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise PackError(f"probe pack {path}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8.") from None
    except yaml.YAMLError as exc:
        raise PackError(f"probe pack {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PackError(f"probe pack {path}: the top level must be a mapping (pack, version, model, ...).")
    try:
        spec = PackSpec.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise PackError(f"probe pack {path}: {details}") from None

    weights_path = path.parent / spec.weights
    if not weights_path.is_file():
        raise PackError(
            f"probe pack {path}: weights file {weights_path} does not exist. Put the safetensors "
            "file next to the YAML or fix the `weights` field."
        )
    directions: np.ndarray | None
    bias: np.ndarray | None
    directions, bias = _read_weights(weights_path, spec, path)
    if not with_weights:
        directions = bias = None
    return ProbePack(spec=spec, path=path, directions=directions, bias=bias)


def _read_weights(weights_path: Path, spec: PackSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise PackError(
            f"probe pack {path}: cannot read {weights_path} as safetensors with float32/float16 tensors ({exc})."
        ) from None
    want_f, want_d = len(spec.features), spec.model.hidden_size
    missing = [name for name in ("directions", "bias") if name not in tensors]
    if missing:
        raise PackError(
            f"probe pack {path}: {weights_path.name} lacks tensors {missing} "
            f"(needs directions [{want_f}, {want_d}] and bias [{want_f}])."
        )
    directions, bias = tensors["directions"], tensors["bias"]
    if directions.shape != (want_f, want_d) or bias.shape != (want_f,):
        raise PackError(
            f"probe pack {path}: {weights_path.name} has directions {list(directions.shape)} and "
            f"bias {list(bias.shape)}; the YAML declares {want_f} features of a model with hidden "
            f"size {want_d}, so they must be [{want_f}, {want_d}] and [{want_f}]."
        )
    directions = directions.astype(np.float32)
    bias = bias.astype(np.float32)
    if not (np.isfinite(directions).all() and np.isfinite(bias).all()):
        raise PackError(f"probe pack {path}: {weights_path.name} contains NaN or infinite values.")
    return directions, bias


def save_pack(spec: PackSpec, directions: np.ndarray, bias: np.ndarray, path: Path) -> ProbePack:
    """Write a pack (YAML + safetensors) and load it back, so what is written is valid."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "directions": np.ascontiguousarray(directions, dtype=np.float32),
            "bias": np.ascontiguousarray(bias, dtype=np.float32),
        },
        str(path.parent / spec.weights),
    )
    document = spec.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_pack(path)


@dataclass(frozen=True)
class PackSet:
    """All packs loaded from a directory; probe names are unique across them."""

    packs: tuple[ProbePack, ...] = ()

    def get(self, name: str) -> ProbePack | None:
        return next((p for p in self.packs if p.name == name), None)

    @property
    def probe_count(self) -> int:
        return sum(len(p.spec.probes) for p in self.packs)


def load_pack_dir(directory: Path | None, *, with_weights: bool = False) -> PackSet:
    """Load every pack YAML in ``directory`` (not recursive); all or nothing."""
    if directory is None:
        return PackSet()
    directory = Path(directory)
    if not directory.is_dir():
        raise PackError(
            f"probe pack directory {directory} does not exist or is not a directory. "
            "Set sidecar.probes_dir (SAEMON_SIDECAR__PROBES_DIR) to a folder of pack YAML files."
        )
    entries = sorted(p for p in directory.iterdir() if p.suffix in PACK_SUFFIXES)
    # A pack name that is not a readable file (a directory, a dangling link) is an error,
    # not a pack to skip: skipping it would drop its probes without a word.
    files = [p for p in entries if p.is_file()]
    errors = [
        f"probe pack {p}: {'a directory' if p.is_dir() else 'not a regular file (a dangling link?)'}, "
        "not a pack YAML file; move it out of the pack directory or restore the file"
        for p in entries
        if not p.is_file()
    ]
    packs = []
    for file in files:
        try:
            packs.append(load_pack(file, with_weights=with_weights))
        except PackError as exc:
            errors.append(str(exc))
    names = Counter(p.name for p in packs)
    errors += [f"pack name {n!r} is used by more than one file in {directory}" for n, c in names.items() if c > 1]
    probes = Counter(probe.name for p in packs for probe in p.spec.probes)
    errors += [
        f"probe name {n!r} is defined in more than one pack in {directory}; probe names label "
        "metrics and alerts, so they must be unique"
        for n, c in probes.items()
        if c > 1
    ]
    if errors:
        raise PackError("\n".join(errors))
    return PackSet(tuple(packs))
