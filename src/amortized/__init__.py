"""amortized: amortized-inference techniques as vLLM extensions, agent tools and batch jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("amortized")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
