"""Model specs: YAML files shipped in this package (one per model), user YAML files,
Hugging Face ``config.json`` files (see :mod:`kvsim.models.hf_import`) and models in the local
Hugging Face cache (see :mod:`kvsim.models.hf_cache`)."""

from __future__ import annotations

from pathlib import Path

from kvsim.catalog import canonical_names, load_catalog, lookup, spec_key
from kvsim.errors import SpecError
from kvsim.models.hf_cache import cached_config, hub_cache_dir, looks_like_repo_id
from kvsim.models.hf_import import load_hf_config
from kvsim.models.spec import MLASpec, ModelSpec, MoESpec
from kvsim.specbase import name_or_spec, read_yaml, validate_dict

MODELS_DIR = Path(__file__).parent

__all__ = ["ModelSpec", "MoESpec", "MLASpec", "load_model", "catalog", "names"]


def catalog() -> dict[str, ModelSpec]:
    """All shipped models, keyed by lower-case name and every alias."""
    return load_catalog(MODELS_DIR, ModelSpec, "model")


def names() -> list[str]:
    """Canonical names of the shipped models."""
    return canonical_names(catalog())


def load_model(name_or_path: str | Path | ModelSpec) -> ModelSpec:
    """Resolve ``--model``, in this order: a kvsim model YAML or HF ``config.json`` path (or a folder
    holding a ``config.json``); a shipped name or alias; ``org/name`` found in the local Hugging
    Face cache. Nothing is downloaded. A :class:`ModelSpec` is returned as it is."""
    name_or_path = name_or_spec(name_or_path, ModelSpec, "model must be a name, a YAML or config.json path or a ModelSpec")
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    p = Path(name_or_path)
    if name_or_path.endswith(".json"):
        return load_hf_config(p)
    if name_or_path.endswith((".yaml", ".yml")) or p.is_file():
        return validate_dict(ModelSpec, read_yaml(p), str(p))
    if p.is_dir():
        if (p / "config.json").is_file():
            return load_hf_config(p / "config.json", name=p.name)
        if spec_key(name_or_path) in catalog():  # (a folder named like a shipped model: the shipped model)
            return lookup(catalog(), name_or_path, "model")
        raise SpecError(f"{p}: a folder without a config.json; --model takes a model YAML, a Hugging Face config.json "
                        f"or a folder holding one, or a name (`kvsim list models`)")
    shipped = catalog()
    if spec_key(name_or_path) in shipped or not looks_like_repo_id(name_or_path):
        return lookup(shipped, name_or_path, "model")
    config = cached_config(name_or_path)
    if config is not None:
        return load_hf_config(config, name=name_or_path)
    raise SpecError(
        f"unknown model '{name_or_path}': not a shipped model (see `kvsim list models`) and no config.json "
        f"for it in the Hugging Face cache {hub_cache_dir()} (kvsim never downloads: `huggingface-cli "
        f"download {name_or_path} config.json` fetches it, or pass the path of a config.json)"
    )
