"""saemon: a model-monitoring safety daemon for vLLM.

The import package is ``monitor``; the distribution and the command are ``saemon``.
Nothing heavy is imported here: vLLM loads ``monitor.vllm`` in every one of its processes.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("saemon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
