"""Published quality per method configuration (METHODS.md §4; MagicPIG paper Tables 3 and 6,
reproduced by the tutorial seed). kvsim does not compute accuracy; these rows let reports
put speed next to the quality the papers measured for the same configuration.

Config keys: MagicPIG ``(K, L)``; Quest ``(page_size, budget_ratio)``; TopK and oracle sampling ``budget_ratio``.
"""

from __future__ import annotations

from kvsim.catalog import spec_key
from kvsim.methods.base import PublishedAccuracy

_SRC_RULER = "MagicPIG (arXiv 2410.16179) Table 3 via METHODS.md §4 (RULER)"
_SRC_REASON = "MagicPIG (arXiv 2410.16179) Table 6 via METHODS.md §4 (2/4/5-op reasoning)"
_RULER_COLS = ("RULER-16K", "RULER-32K", "RULER-64K", "RULER-96K", "RULER-avg")

# model -> method -> config -> scores in _RULER_COLS order
_RULER: dict[str, dict[str, dict[object, tuple[float, ...]]]] = {
    "Llama-3.1-8B-Instruct": {
        "full": {None: (94.2, 91.5, 86.1, 83.0, 88.7)},
        "magicpig": {(10, 150): (91.8, 88.9, 84.8, 80.0, 86.4), (9, 120): (93.4, 90.6, 84.7, 81.5, 87.6),
                     (8, 75): (92.9, 90.2, 84.9, 81.7, 87.4)},
        "quest": {(16, 0.04): (86.3, 85.4, 81.9, 74.9, 82.1), (32, 0.06): (84.3, 84.0, 80.1, 74.4, 80.7),
                  (64, 0.08): (85.2, 84.3, 77.0, 74.2, 80.2)},
    },
    "MegaBeam-Mistral-7B-512K": {
        "full": {None: (91.7, 88.1, 83.5, 83.7, 86.8)},
        "magicpig": {(10, 150): (89.8, 86.5, 81.7, 80.7, 84.7), (9, 120): (90.7, 88.5, 82.9, 82.4, 86.1),
                     (8, 75): (90.6, 86.4, 82.8, 81.6, 85.4)},
        "quest": {(16, 0.04): (83.3, 83.2, 79.3, 78.6, 81.1), (32, 0.06): (81.5, 80.8, 76.7, 74.4, 78.4),
                  (64, 0.08): (79.6, 77.5, 73.8, 73.7, 76.1)},
    },
}

_REASON_COLS = ("reasoning-2ops", "reasoning-4ops", "reasoning-5ops")
_REASON: dict[str, dict[object, tuple[float, ...]]] = {  # Llama-3.1-8B-Instruct
    "full": {None: (87.4, 71.4, 26.8)},
    "magicpig": {(10, 300): (83.1, 67.2, 20.7), (10, 220): (79.8, 58.9, 17.9), (10, 150): (68.3, 43.5, 11.7)},
    "topk": {0.06: (78.6, 62.9, 20.8), 0.04: (76.2, 59.0, 19.2), 0.02: (71.5, 44.0, 11.3)},
    "quest": {(16, 0.06): (55.8, 23.2, 5.2)},
    "oracle": {0.3: (88.1, 72.4, 27.6), 0.1: (88.5, 69.2, 26.2), 0.02: (83.1, 57.9, 11.9)},
}


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
    """Rows of METHODS.md §4 for ``method`` at ``config`` (``None`` = the full baseline)."""
    out: list[PublishedAccuracy] = []
    for model, per_method in _RULER.items():
        for cfg, scores in per_method.get(method, {}).items():
            if _key_match(cfg, config):
                full = per_method["full"][None]
                out += [PublishedAccuracy(col, model, label, s, f, _SRC_RULER) for col, s, f in zip(_RULER_COLS, scores, full)]
    for cfg, scores in _REASON.get(method, {}).items():
        if _key_match(cfg, config):
            full = _REASON["full"][None]
            out += [PublishedAccuracy(col, "Llama-3.1-8B-Instruct", label, s, f, _SRC_REASON)
                    for col, s, f in zip(_REASON_COLS, scores, full)]
    return out
