"""Model specs: YAML files shipped in this package (one per model), user YAML files,
and Hugging Face ``config.json`` files (see :mod:`kvsim.models.hf_import`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from kvsim.errors import SpecError, unknown_name
from kvsim.models.spec import MLASpec, ModelSpec, MoESpec
from kvsim.specbase import read_yaml, validate_dict

MODELS_DIR = Path(__file__).parent

__all__ = ["ModelSpec", "MoESpec", "MLASpec", "load_model", "catalog", "names"]


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=1)
def catalog() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        spec = validate_dict(ModelSpec, read_yaml(path), str(path))
        for n in [spec.name, *spec.aliases]:
            k = _key(n)
            if k in out and out[k] is not spec:
                raise SpecError(f"{path}: name or alias '{n}' is already used by another model")
            out[k] = spec
    return out


def names() -> list[str]:
    return sorted({m.name for m in catalog().values()})


def load_model(name_or_path: str) -> ModelSpec:
    """Resolve ``--model``: a shipped name/alias, a kvsim model YAML, or an HF config.json."""
    p = Path(name_or_path)
    if name_or_path.endswith(".json"):
        from kvsim.models.hf_import import load_hf_config

        return load_hf_config(p)
    if name_or_path.endswith((".yaml", ".yml")) or p.is_file():
        return validate_dict(ModelSpec, read_yaml(p), str(p))
    spec = catalog().get(_key(name_or_path))
    if spec is None:
        raise unknown_name("model", name_or_path, sorted(catalog()), shown=names())
    return spec
