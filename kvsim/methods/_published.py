"""Published quality per method configuration, read from ``quality.yaml`` (METHODS.md §4; MagicPIG
paper Tables 3 and 6, reproduced by the tutorial seed; the papers' abstract claims). kvsim does not
compute accuracy; these rows let reports put speed next to the quality the papers measured for the
same configuration.

Config keys: MagicPIG ``(K, L)``; Quest ``(page_size, budget_ratio)``; TopK and oracle sampling ``budget_ratio``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from kvsim.catalog import spec_key
from kvsim.methods.base import PublishedAccuracy

QUALITY_YAML = Path(__file__).with_name("quality.yaml")


def _key(k: object) -> object:
    return tuple(k) if isinstance(k, list) else k


@lru_cache(maxsize=1)
def _data() -> dict:
    """The shipped quality file (read once; package data, never a path outside kvsim)."""
    return yaml.safe_load(QUALITY_YAML.read_text(encoding="utf-8"))


def _tables() -> dict[str, dict]:
    return {t["name"]: t for t in _data()["tables"]}


def score_rows() -> list[dict]:
    """Every scored row: ``{table, model, method, key, scores}`` (``key`` lists become tuples)."""
    return [{**r, "key": _key(r["key"])} for r in _data()["scores"]]


def claims(method: str | None = None) -> list[dict]:
    """The papers' quality claims (``method``'s only when given), as in quality.yaml."""
    return [dict(c) for c in _data()["claims"] if method is None or c["method"] == method]


#: the kvsim model each published model name is (its weights' architecture)
KVSIM_MODEL = {"Llama-3.1-8B-Instruct": "llama-3.1-8b", "MegaBeam-Mistral-7B-512K": "megabeam-mistral-7b-512k"}
#: the papers ran 16-bit weights and KV
PUBLISHED_DTYPES = ("bf16", "fp16")


def applies_to(row: PublishedAccuracy, dep) -> bool:
    """Was ``row`` measured on the deployment's model (name or alias) with 16-bit weights and KV?
    (A number measured on another model or precision is not this configuration's accuracy.)"""
    model = dep.model
    names = {spec_key(n) for n in (model.name, *model.aliases, model.hf_id or "")}
    measured = {spec_key(row.model), spec_key(KVSIM_MODEL.get(row.model, row.model))}
    return bool(names & measured) and dep.weight_dtype in PUBLISHED_DTYPES and dep.kv_dtype in PUBLISHED_DTYPES


def _key_match(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-9 for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) < 1e-9  # type: ignore[arg-type]


def published(method: str, config: object, label: str) -> list[PublishedAccuracy]:
    """Scored rows of quality.yaml for ``method`` at ``config`` (``None`` = the full baseline), one
    :class:`PublishedAccuracy` per benchmark column, with the same table's full-attention score."""
    tables, rows = _tables(), score_rows()
    full = {(r["table"], r["model"]): r["scores"] for r in rows if r["method"] == "full"}
    out: list[PublishedAccuracy] = []
    for r in rows:
        if r["method"] != method or not _key_match(r["key"], config):
            continue
        t = tables[r["table"]]
        base = full[(r["table"], r["model"])]
        out += [PublishedAccuracy(col, r["model"], label, s, f, t["source"])
                for col, s, f in zip(t["benchmarks"], r["scores"], base)]
    return out
