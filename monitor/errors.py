"""saemon's exceptions. Each message names the input, the problem and the fix."""


class SaemonError(Exception):
    """Base of every error saemon raises on purpose; the CLI prints these without a traceback."""


class ConfigError(SaemonError):
    """The configuration (YAML file, SAEMON_* environment, command line) is invalid."""


class ModelError(SaemonError):
    """The default model cannot be provisioned, found or verified."""


class DependencyError(SaemonError):
    """An optional dependency needed for this command is not installed."""


class VllmServerError(SaemonError):
    """A vLLM server that saemon started failed to start, answer or stop."""


class PackError(ConfigError):
    """A probe pack is invalid, inconsistent, or made for another model."""


class SaeError(SaemonError):
    """An SAE file is missing, of an unknown format, ambiguous or inconsistent."""


class ProbeDataError(SaemonError):
    """A probe dataset (JSONL) is missing, malformed, or unusable for the requested step."""
