"""Model specs: YAML files shipped in this package (one per model), user YAML files,
and Hugging Face ``config.json`` files (see :mod:`kvsim.models.hf_import`)."""

from __future__ import annotations

from pathlib import Path

from kvsim.catalog import canonical_names, load_catalog, lookup
from kvsim.models.hf_import import load_hf_config
from kvsim.models.spec import MLASpec, ModelSpec, MoESpec
from kvsim.specbase import read_yaml, validate_dict

MODELS_DIR = Path(__file__).parent

__all__ = ["ModelSpec", "MoESpec", "MLASpec", "load_model", "catalog", "names"]


def catalog() -> dict[str, ModelSpec]:
    """All shipped models, keyed by lower-case name and every alias."""
    return load_catalog(MODELS_DIR, ModelSpec, "model")


def names() -> list[str]:
    """Canonical names of the shipped models."""
    return canonical_names(catalog())


def load_model(name_or_path: str) -> ModelSpec:
    """Resolve ``--model``: a shipped name/alias, a kvsim model YAML, or an HF config.json."""
    p = Path(name_or_path)
    if name_or_path.endswith(".json"):
        return load_hf_config(p)
    if name_or_path.endswith((".yaml", ".yml")) or p.is_file():
        return validate_dict(ModelSpec, read_yaml(p), str(p))
    return lookup(catalog(), name_or_path, "model")
