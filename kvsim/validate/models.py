"""Models of the validation runs: shipped specs plus the small e2e model ``tiny-llama`` (no torch)."""

from __future__ import annotations

from pathlib import Path

from kvsim.models import ModelSpec, load_model
from kvsim.specbase import load_yaml_as

TINY = Path(__file__).with_name("tiny-llama.yaml")
_TINY_NAMES = {"tiny-llama", "tiny-llama-4l", "kvsim-tiny-llama"}


def resolve_model(name: str) -> ModelSpec:
    """``tiny-llama`` (this package's e2e model) or anything ``--model`` accepts elsewhere."""
    if name.strip().lower() in _TINY_NAMES:
        return load_yaml_as(ModelSpec, TINY)
    return load_model(name)


def default_model(device: str) -> ModelSpec:
    """CPU: the small e2e model (a laptop runs its shapes quickly); CUDA: Llama-3.1-8B."""
    return resolve_model("tiny-llama" if device == "cpu" else "llama-3.1-8b")


def short_name(model: ModelSpec) -> str:
    return model.name.lower().replace("/", "-").replace(" ", "-")
