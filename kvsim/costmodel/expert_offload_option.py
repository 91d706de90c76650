"""``--expert-offload KEY=VALUE,...``: the text of the option -> :class:`ExpertOffload`.

Keys (docs/expert-offload.md):

* ``cache=N``: routed experts of each MoE layer kept on the GPU (0 = all on the host), or
  ``cache-bytes=B``: GPU bytes per GPU for the expert cache (``N = floor(B / (n_moe P_e b_w / tp))``).
  Default: ``2 x experts_per_token``, the cache the published hit rates assume.
* ``miss=fetch`` (default) or ``miss=cpu``: a missed expert is copied over PCIe, or computed on the host.
* ``overlap=no`` (default) or ``overlap=yes``: transfers / CPU work overlap the linear GPU work.
* the hit rate, one of: ``hit-rate=H`` (a fraction), ``routing=FILE`` (an LRU cache simulated over a
  routing trace, :mod:`kvsim.costmodel.expert_routing`), ``sch=L`` (the model's published Segment
  Cache Best Hit Rate for L-token segments, L in 4, 16, 64, 256). Default: ``sch=16``.
"""

from __future__ import annotations

import math

from kvsim.costmodel.expert_offload import ExpertOffload
from kvsim.errors import ConfigError
from kvsim.models.expert_hit_rates import DEFAULT_SEGMENT, published_cache_experts, published_hit_rate
from kvsim.models.spec import ModelSpec

KEYS = ("cache", "cache-bytes", "miss", "overlap", "hit-rate", "routing", "sch")
_YES, _NO = ("yes", "true", "on", "1"), ("no", "false", "off", "0")


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower().replace("_", "-"), value.strip()
        if not sep or not value:
            raise ConfigError(f"--expert-offload: '{item}' is not KEY=VALUE (keys: {', '.join(KEYS)})")
        if key not in KEYS:
            raise ConfigError(f"--expert-offload: unknown key '{key}' (keys: {', '.join(KEYS)})")
        if key in out:
            raise ConfigError(f"--expert-offload: '{key}' given twice")
        out[key] = value
    return out


def _number(key: str, value: str, kind: type = float) -> float:
    try:
        x = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"--expert-offload {key}={value}: not {what}") from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"--expert-offload {key}={value}: must be a finite number >= 0")
    return x


def _cache_experts(opts: dict[str, str], model: ModelSpec, weight_bytes: float, tp: int) -> int:
    if "cache" in opts and "cache-bytes" in opts:
        raise ConfigError("--expert-offload: give cache= (experts per layer) or cache-bytes=, not both")
    if "cache" in opts:
        return int(_number("cache", opts["cache"], int))
    if "cache-bytes" in opts:
        per_layer_expert = model.num_moe_layers * model.expert_params * weight_bytes / tp  # bytes per GPU
        return min(model.moe.num_experts, int(_number("cache-bytes", opts["cache-bytes"]) // per_layer_expert))
    return published_cache_experts(model)


def _hit_rate(opts: dict[str, str], model: ModelSpec, cache: int) -> tuple[float, str]:
    given = [k for k in ("hit-rate", "routing", "sch") if k in opts]
    if len(given) > 1:
        raise ConfigError(f"--expert-offload: give one of hit-rate=, routing=, sch= (got {', '.join(given)})")
    if cache == 0:
        if given:
            raise ConfigError(f"--expert-offload cache=0 keeps no expert on the GPU: every access misses, "
                              f"so {given[0]}= does not apply")
        return 0.0, "cache of 0 experts"
    if cache >= model.moe.num_experts and not given:  # every expert resident: nothing can miss
        return 1.0, f"cache of all {model.moe.num_experts} experts"
    if "hit-rate" in opts:
        h = _number("hit-rate", opts["hit-rate"])
        if h > 1:
            raise ConfigError(f"--expert-offload hit-rate={opts['hit-rate']}: must be a fraction in [0, 1]")
        k = model.moe.experts_per_token
        if cache < k and h > cache / k:  # (a token's k distinct experts: at most `cache` of them are resident)
            raise ConfigError(f"--expert-offload hit-rate={opts['hit-rate']}: a cache of {cache} expert(s) per layer "
                              f"holds at most {cache} of the {k} experts a token uses, so at most {cache / k:g} of "
                              f"accesses hit")
        return h, "given"
    if "routing" in opts:
        # lazy: numpy work only when a trace is given
        from kvsim.costmodel.expert_routing import lru_hit_rate, read_routing_trace

        moe = model.moe
        trace = read_routing_trace(opts["routing"], moe.num_experts, moe.experts_per_token, model.num_moe_layers)
        h = lru_hit_rate(trace, cache, moe.num_experts)
        return h, f"LRU over {trace.shape[0]:,} tokens of {opts['routing']}"
    segment = int(_number("sch", opts["sch"], int)) if "sch" in opts else DEFAULT_SEGMENT
    h, source = published_hit_rate(model, segment)
    published = published_cache_experts(model)
    if cache != published:
        raise ConfigError(f"--expert-offload: the published hit rate of {model.name} is for a cache of {published} "
                          f"experts per layer (2 x top-{model.moe.experts_per_token}), not {cache}; pass "
                          f"hit-rate=FRACTION or routing=FILE for another cache size")
    return h, source


def parse_expert_offload(text: str, model: ModelSpec, weight_bytes: float = 2.0, tp: int = 1) -> ExpertOffload:
    """The :class:`ExpertOffload` the option text asks for (module docstring), checked against ``model``.

    Args:
        weight_bytes: bytes per weight element (sizes ``cache-bytes``).
        tp: tensor-parallel degree (each GPU holds ``1/tp`` of every cached expert).
    """
    if model.moe is None:
        raise ConfigError(f"--expert-offload: {model.name} is not a mixture-of-experts model")
    opts = _pairs(text)
    cache = _cache_experts(opts, model, weight_bytes, tp)
    E = model.moe.num_experts
    if cache > E:
        raise ConfigError(f"--expert-offload cache={cache} exceeds the {E} experts per layer of {model.name}")
    miss = opts.get("miss", "fetch").lower()
    if miss not in ("fetch", "cpu"):
        raise ConfigError(f"--expert-offload miss={opts['miss']}: choose fetch or cpu")
    overlap = opts.get("overlap", "no").lower()
    if overlap not in _YES + _NO:
        raise ConfigError(f"--expert-offload overlap={opts['overlap']}: choose yes or no")
    h, source = _hit_rate(opts, model, cache)
    return ExpertOffload(cache_experts_per_layer=cache, miss=miss, overlap=overlap in _YES, hit_rate=h,
                         hit_rate_source=source)
