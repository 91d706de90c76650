"""Catalogs of shipped spec files: one YAML per spec in a directory, found by name or alias.

Shared by :mod:`kvsim.hardware` (GPUs, hosts, links, systems) and :mod:`kvsim.models`.
A catalog maps the lookup key of every name and alias (:func:`spec_key`: lower case,
``_`` read as ``-``) to its spec; it is built once per directory (lru-cached; the specs are
frozen pydantic models).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol, TypeVar

from kvsim.errors import SpecError, unknown_name
from kvsim.specbase import read_yaml, validate_dict


class NamedSpec(Protocol):
    name: str
    aliases: list[str]


S = TypeVar("S", bound=NamedSpec)


def spec_key(name: str) -> str:
    """Lookup key of a name or alias: ``"Llama_3.1-8B "`` -> ``"llama-3.1-8b"``."""
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=None)
def load_catalog(directory: Path, cls: type[S], what: str) -> dict[str, S]:
    """Every ``directory/*.yaml`` validated as ``cls``, keyed by :func:`spec_key` of its name and
    each alias. A name or alias used by two files is a SpecError (``what`` names the kind)."""
    out: dict[str, S] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        spec = validate_dict(cls, read_yaml(path), str(path))
        for n in [spec.name, *spec.aliases]:
            k = spec_key(n)
            if k in out and out[k] is not spec:
                raise SpecError(f"{path}: name or alias '{n}' is already used by another {what}")
            out[k] = spec
    return out


def canonical_names(catalog: dict[str, S]) -> list[str]:
    """Sorted canonical names (no aliases) of a catalog's specs."""
    return sorted({s.name for s in catalog.values()})


def lookup(catalog: dict[str, S], name: str, what: str) -> S:
    """The spec named ``name`` (any alias, any case), or a SpecError listing close matches."""
    spec = catalog.get(spec_key(name))
    if spec is None:
        raise unknown_name(what, name, sorted(catalog), shown=canonical_names(catalog))
    return spec
