"""kvsim: analytical performance simulator and roofline cost model for LLM inference
under KV-cache compression.

The core (specs, cost model, methods, estimate, simulator) imports without torch;
only :mod:`kvsim.validate` needs it.
"""

__version__ = "0.1.0"

#: the Python API (kvsim/api.py), loaded on first use so that ``import kvsim`` stays light
_API = ("estimate", "tts_cost", "simulate", "plan", "load_trace", "deployment", "Simulation")


def __getattr__(name: str):
    if name in _API:
        import importlib  # lazy: the package root forwards names only (it sits below every layer)

        return getattr(importlib.import_module("kvsim.api"), name)
    raise AttributeError(f"module 'kvsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
