"""``kvsim estimate --reuse SPEC``: one request's TTFT with reused or streamed KV.

``SPEC`` is ``cacheblend:key=value,...`` (:class:`~kvsim.pricing.reuse.blend.BlendParams`) or
``cachegen:key=value,...`` (:class:`~kvsim.pricing.reuse.stream.StreamParams`). The answer is
a JSON-ready dict; ``cachegen`` adds TTFT against link bandwidth for every level
(:data:`BANDWIDTH_SWEEP_GBPS` plus the spec's own bandwidth).
"""

from __future__ import annotations

from pydantic import ValidationError

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import SpecError, unknown_name
from kvsim.methods import parse_method_spec
from kvsim.pricing.estimate import check_context
from kvsim.pricing.reuse.blend import BlendParams, blend_ttft
from kvsim.pricing.reuse.stream import LEVELS, StreamParams, stream_ttft, ttft_vs_bandwidth
from kvsim.specbase import format_validation_error

KINDS = {"cacheblend": BlendParams, "cachegen": StreamParams}
#: link bandwidths of the TTFT-vs-bandwidth table, Gbit/s
BANDWIDTH_SWEEP_GBPS = (0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 100.0, 400.0)


def parse_reuse_spec(spec: str) -> BlendParams | StreamParams:
    """``"cacheblend:tier=ssd,chunks=4"`` -> validated params; a one-line SpecError otherwise."""
    kind, inline = parse_method_spec(spec)
    cls = KINDS.get(kind)
    if cls is None:
        raise unknown_name("reuse kind", kind, KINDS)
    try:
        return cls.model_validate(inline)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, f"--reuse {kind}")) from None


def reuse_answer(dep: Deployment, spec: str, allow_long_context: bool = False) -> dict:
    """TTFT (seconds) of one request under the spec, with its baselines (priced with ``full`` attention).
    The request (reused tokens + question) must fit the model's context, as ``--context`` must."""
    p = parse_reuse_spec(spec)
    tokens = (p.chunks * p.chunk_tokens if isinstance(p, BlendParams) else p.context_tokens) + p.question_tokens
    note = check_context(int(tokens), dep.model, allow_long_context, flag="--reuse request (tokens)",
                         allow="--allow-long-context")
    if isinstance(p, BlendParams):
        r = blend_ttft(dep, p)
        return {"kind": "cacheblend", "params": p.model_dump(), "note": note, "reused_tokens": r.reused_tokens,
                "question_tokens": r.question_tokens, "load_s_per_layer": r.load_s_per_layer,
                "compute_s_per_layer": r.compute_s_per_layer, "full_layers": r.full_layers,
                "full_layer_s": r.full_layer_s, "load_hidden": r.load_s_per_layer <= r.compute_s_per_layer,
                "ttft_s": r.ttft_s, "full_recompute_s": r.full_recompute_s, "prefix_caching_s": r.prefix_caching_s,
                "speedup_vs_recompute": r.speedup_vs_recompute, "speedup_vs_prefix": r.speedup_vs_prefix}
    s = stream_ttft(dep, p)
    sweep = sorted(set(BANDWIDTH_SWEEP_GBPS) | {float(p.link_gbps)})
    table = {lv: [x.ttft_s for x in ttft_vs_bandwidth(dep, p.model_copy(update={"level": lv}), sweep)] for lv in LEVELS}
    return {"kind": "cachegen", "params": p.model_dump(), "note": note, "bits_per_element": s.bits_per_element,
            "encoded_bytes": s.encoded_bytes, "transfer_s": s.transfer_s, "decode_s": s.decode_s,
            "stream_s": s.stream_s, "recompute_s": s.recompute_s, "ttft_s": s.ttft_s, "choice": s.choice,
            "ttft_vs_bandwidth": {"link_gbps": sweep, "ttft_s_by_level": table}}
