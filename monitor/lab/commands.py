"""``saemon probes ...``: the command line of the probe library (parsing is in monitor/cli.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.errors import ConfigError

if TYPE_CHECKING:
    from monitor.sae.sae import SAE

log = logging.getLogger(__name__)


def run(args: argparse.Namespace, settings: Settings, model_dir: Path | None) -> int:
    from monitor.lab import datasets

    if args.probes_command == "generate":
        for concept, (path, count, sha) in datasets.generate_all(
            Path(args.out), args.concept or tuple(datasets.GENERATORS)
        ).items():
            print(f"{concept:<14} {count:6d} examples  {path}  sha256 {sha[:16]}")
        return 0

    from monitor.sae.activations import load_model

    assert model_dir is not None
    if args.probes_command == "discover":
        from monitor.lab.discover import discover, format_discovery
        from monitor.sae import load_sae

        examples = datasets.read_jsonl(Path(args.data))
        sae = load_sae(args.sae)
        model, tokenizer, _ = load_model(model_dir)
        report = discover(
            model, tokenizer, sae, Path(args.sae).name, examples, args.concept, args.top, args.contexts, args.limit
        )
        report["selected"] = [r["latent"] for r in report["latents"] if r["auroc"] > 0.5][: args.select]
        print(json.dumps(report, indent=2) if args.json else format_discovery(report, args.select))
        return 0

    from monitor.pack import load_pack

    paths = [Path(p) for p in args.data]
    examples = datasets.read_datasets(paths)
    model, tokenizer, _ = load_model(model_dir)
    if args.probes_command == "train":
        from monitor.lab.train import TrainSettings, train_pack

        layers = _layers(args.layers)
        severity = dict(_pair(item) for item in args.severity)
        train_sae: SAE | None = None
        if args.sae:
            from monitor.sae import load_sae

            train_sae = load_sae(args.sae)
        pack = train_pack(
            model,
            tokenizer,
            examples,
            args.concept,
            Path(args.out),
            model_name=settings.model.name,
            settings=TrainSettings(
                layers=layers,
                latents=args.latents,
                decide=args.decide,
                aggregation=args.aggregation,
                ema_alpha=_alpha(args.ema_alpha),
            ),
            sae=train_sae,
            sae_name=Path(args.sae).name if args.sae else None,
            pack_name=args.pack_name,
            severity=severity,
        )
        pack = _calibrate(model, tokenizer, pack, examples, args.fpr, "calib")
        _evaluate(model, tokenizer, pack, examples, "test", paths, record=True, as_json=False)
        print(f"wrote {pack.path}")
        return 0
    if args.probes_command == "eval" and args.held_out:
        if args.streaming:
            raise ConfigError("saemon probes eval: --held-out and --streaming are two measurements; give one")
        return _held_out(args, model, tokenizer, examples)
    if not args.pack:
        raise ConfigError(
            f"saemon probes {args.probes_command}: give --pack PACK.yaml"
            + (
                " (or --held-out --concept CONCEPT to measure the probe recipe out of distribution)"
                if args.probes_command == "eval"
                else ""
            )
        )
    pack = load_pack(Path(args.pack))
    pack.check_model(model_dir.name, model.config.hidden_size, model.config.num_hidden_layers)
    if args.probes_command == "calibrate":
        _calibrate(model, tokenizer, pack, examples, args.fpr, args.split)
        return 0
    if args.streaming:
        from monitor.lab.streaming import format_streaming, streaming_quality
        from monitor.lab.streaming import to_json as streaming_json

        if args.record:
            raise ConfigError("saemon probes eval --streaming measures only: drop --record")
        streamed = streaming_quality(
            model, tokenizer, pack, examples, split=args.split, fpr=args.fpr, resamples=args.resamples
        )
        body = {"pack": pack.name, "split": args.split, "probes": streaming_json(streamed)}
        _show(args.json, body, format_streaming(streamed))
        return 0
    _evaluate(model, tokenizer, pack, examples, args.split, paths, record=args.record, as_json=args.json)
    return 0


def _held_out(args: argparse.Namespace, model, tokenizer, examples) -> int:
    from monitor.lab.ood import format_ood, held_out_sources, pool_for_protocol, to_json
    from monitor.lab.train import TrainSettings

    if not args.concept:
        raise ConfigError("saemon probes eval --held-out: give --concept CONCEPT (e.g. deception)")
    if args.record and not args.pack:
        raise ConfigError("saemon probes eval --held-out --record: give --pack PACK.yaml to record the figures in")
    if args.pack and not args.record:
        raise ConfigError(
            "saemon probes eval --held-out fits its own probes per fold: --pack is only where --record "
            "writes the figures (measure a pack itself without --held-out)"
        )
    if args.resamples < 0:
        raise ConfigError(f"--resamples {args.resamples}: expected 0 or more")
    settings = TrainSettings(
        layers=_layers(args.layers), aggregation=args.aggregation, ema_alpha=_alpha(args.ema_alpha)
    )
    pooled, chosen = pool_for_protocol(model, tokenizer, examples, args.concept, args.source_key, settings)
    report = held_out_sources(
        pooled,
        chosen,
        args.concept,
        key=args.source_key,
        fpr=args.fpr,
        settings=settings,
        resamples=args.resamples,
        method=args.method,
    )
    _show(args.json, to_json(report), format_ood(report))
    if args.record:
        from monitor.lab.ood import record
        from monitor.pack import load_pack

        pack = load_pack(Path(args.pack))
        record(pack, report)
        log.info("recorded the held-out figures of %s in %s", args.concept, pack.path)
    return 0


def _calibrate(model, tokenizer, pack, examples, fpr: float, split: str):
    from monitor.lab.calibrate import calibrate, format_calibration

    pack, report = calibrate(model, tokenizer, pack, examples, fpr, split)
    print(format_calibration(report, fpr))
    return pack


def _evaluate(model, tokenizer, pack, examples, split: str, paths, *, record: bool, as_json: bool) -> None:
    from monitor.lab.datasets import file_digests
    from monitor.lab.evaluate import evaluate, format_report, to_json
    from monitor.lab.evaluate import record as write_record

    report = evaluate(model, tokenizer, pack, examples, split)
    _show(as_json, {"pack": pack.name, "split": split, "probes": to_json(report)}, format_report(report))
    if record:
        write_record(pack, report, split, file_digests(paths))
        log.info("recorded the %s-split figures in %s", split, pack.path)


def _show(as_json: bool, body: object, text: str) -> None:
    """A command's report: its JSON (--json) or its table."""
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
    else:
        print(text)


def _layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--layers {text!r}: expected comma-separated layer numbers, e.g. 9,12,15") from None
    if not layers:
        raise ConfigError("--layers: give at least one layer")
    return layers


def _pair(text: str) -> tuple[str, str]:
    concept, _, level = text.partition("=")
    if level not in ("info", "warning", "critical"):
        raise ConfigError(f"--severity {text!r}: expected CONCEPT=info|warning|critical")
    return concept, level


def _alpha(value: float) -> float:
    if not 0 < value <= 1:
        raise ConfigError(f"--ema-alpha {value}: expected a weight in (0, 1], e.g. 0.1")
    return value
