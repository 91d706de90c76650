"""kvsim: analytical performance simulator and roofline cost model for LLM inference
under KV-cache compression.

The core (specs, cost model, methods, estimate, simulator) imports without torch;
only :mod:`kvsim.validate` needs it.
"""

__version__ = "0.1.0"

#: the Python API (kvsim/api.py), loaded on first use so that ``import kvsim`` stays light
_API = ("estimate", "tts_cost", "simulate", "plan", "load_trace", "deployment", "Simulation")
#: subpackages a user reaches as attributes (``kvsim.errors.KvsimError``), imported on first use
_SUBMODULES = ("errors", "hardware", "models", "traces", "methods", "api")
__all__ = list(_API)


def __getattr__(name: str):
    import importlib  # lazy: the package root forwards names only (it sits below every layer)

    if name in _API:
        return getattr(importlib.import_module("kvsim.api"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"kvsim.{name}")
    raise AttributeError(f"module 'kvsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_SUBMODULES])
