"""CacheGen TTFT: encoded KV streamed over a link, against recomputation (METHODS.md 1.15).

CacheGen (Liu et al., SIGCOMM'24) encodes a context's KV into bitstreams and streams it in
chunks; the GPU decodes chunk i while chunk i+1 is on the wire, then the model prefills the
new suffix (the question) attending to the whole context:

    TTFT_stream  = pipeline(tx_i, dec_i over chunks) + prefill(q new after n cached)   [METHODS.md 1.15, DERIVED]
    TTFT_recompute = prefill(n + q new)   (the text's bytes are negligible)
    TTFT = min(TTFT_stream, TTFT_recompute)   (CacheGen falls back to text and recompute)

* ``tx_i = enc_bytes_i / link_bw`` with ``enc_bytes = elements x bits_per_element / 8``,
  elements = ``tokens x kv_elements_per_token`` (all attention layers, all KV heads: the one link
  carries the whole replica's KV whatever ``tp``), priced by
  :func:`~kvsim.costmodel.roofline.transfer_seconds` (the link is the user's, not the System's).
* ``dec_i``: each GPU decodes its own share in parallel, a GPU pass reading the encoded bytes and writing the decoded KV (HBM bytes, op
  ``elementwise``) plus ``decode_flops_per_element`` per element, priced by the roofline. CacheGen
  reports its decoding overhead as negligible; the default 0 extra FLOPs is an assumption.
* ``prefill``: :class:`~kvsim.pricing.step.StepModel` with the ``full`` method, one step.

Levels (:data:`LEVELS`) are bits per KV element. CacheGen's abstract (arXiv 2310.07240 v3)
reports a KV 3.5-4.3x smaller than "recent systems that reuse the KV cache"; kvsim reads that
baseline as 8-bit quantization ([UNVERIFIED]: METHODS.md marks CacheGen's knob values as not
verified), so ``cachegen`` = 8 / 3.5 bits and ``cachegen-max`` = 8 / 4.3 bits per element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.roofline import transfer_seconds
from kvsim.errors import ConfigError
from kvsim.methods.full import Full
from kvsim.pricing.reuse.blend import prefill_step_s, require_attention_only
from kvsim.pricing.reuse.pipeline import uniform_pipeline_s
from kvsim.pricing.step import StepModel
from kvsim.specbase import Strict, number

#: level -> bits per KV element on the wire ("raw": the KV dtype's own bits, set per deployment)
LEVELS: dict[str, float | None] = {
    "raw": None,
    "q8": 8.0,  # 8-bit quantization (CacheGen's quantization baseline, read as 8-bit [UNVERIFIED])
    "cachegen": 8.0 / 3.5,  # 3.5x smaller than q8 (abstract, low end): 2.29 bits/element
    "cachegen-max": 8.0 / 4.3,  # 4.3x smaller than q8 (abstract, high end): 1.86 bits/element
}
#: CacheGen's published KV size reduction over its quantization baseline (abstract, arXiv 2310.07240 v3)
PUBLISHED_SIZE_RATIO = (3.5, 4.3)
#: and its published reduction of fetch + processing delay (v3 abstract: 3.2-3.7x; v1 abstract, METHODS.md 1.15: 2.7-3x)
PUBLISHED_DELAY_RATIO_V3 = (3.2, 3.7)
PUBLISHED_DELAY_RATIO_V1 = (2.7, 3.0)

Tokens = number(int, 0, 10**9, unit="tokens")
Level = Literal["raw", "q8", "cachegen", "cachegen-max"]


class StreamParams(Strict):
    """One CacheGen request: ``context_tokens`` of stored KV, a suffix, a link and a level."""

    context_tokens: Tokens = Field(9400, description="tokens whose KV is stored remotely (illustrative)")
    question_tokens: Tokens = Field(64, description="new tokens prefilled after the context (illustrative)")
    link_gbps: number(float, 1e-6, 1e7, unit="Gbit/s (1 kbit/s to 10 Pbit/s)") = Field(3.0, description="link bandwidth, Gbit/s (1e9 bits/s)")
    level: Level = Field("cachegen", description="encoding level: " + ", ".join(LEVELS))
    chunk_tokens: number(int, 1, 10**9, unit="tokens") = Field(1500, description="tokens per streamed chunk [UNVERIFIED]")
    decode_flops_per_element: number(float, 0, 1e6) = Field(0.0, description="GPU FLOPs to decode one KV element")


@dataclass(frozen=True)
class StreamTTFT:
    """TTFT of one request (seconds, no queueing): streamed, recomputed, and the choice."""

    level: str
    bits_per_element: float
    encoded_bytes: float  # whole context on the link (the replica's KV)
    transfer_s: float  # whole context over the link (not pipelined)
    decode_s: float  # whole context
    stream_s: float  # pipelined transfer + decode + suffix prefill
    recompute_s: float
    choice: str  # "stream" or "recompute"

    @property
    def ttft_s(self) -> float:
        return min(self.stream_s, self.recompute_s)


def bits_per_element(dep: Deployment, level: str) -> float:
    """Bits per KV element on the wire at ``level`` (``raw``: the deployment's KV dtype)."""
    b = LEVELS[level]
    return dep.kvb * 8.0 if b is None else b


def decode_seconds(dep: Deployment, step: StepModel, tokens: float, p: StreamParams) -> float:
    """GPU seconds to decode ``tokens`` tokens' KV at ``p.level``: read the encoded bytes, write
    the KV dtype (HBM), ``p.decode_flops_per_element`` per element, one launch (0 for ``raw``)."""
    if p.level == "raw" or tokens <= 0:
        return 0.0
    elems = tokens * dep.full_kv_bytes_per_token / dep.kvb
    enc = elems * bits_per_element(dep, p.level) / 8.0
    return float(step.roofline.seconds(Cost.of(Part(
        "kv_decode", "elementwise", hbm_bytes=enc + elems * dep.kvb, flops=elems * p.decode_flops_per_element,
        launches=1.0))))


def stream_ttft(dep: Deployment, p: StreamParams) -> StreamTTFT:
    """CacheGen TTFT of one request (module docstring)."""
    require_attention_only(dep, "cachegen")
    step = StepModel(dep, Full(dep))
    n, q = p.context_tokens, p.question_tokens
    if n + q <= 0:
        raise ConfigError("cachegen: a request needs at least one token (context_tokens + question_tokens is 0)")
    bits = bits_per_element(dep, p.level)
    m = dep.model
    elems_tok = m.attn_layers * m.kv_elements_per_token_per_layer  # KV elements per token on the link (replica)
    n_chunks = math.ceil(n / p.chunk_tokens) if n else 0

    def chunk_times(tokens: float) -> tuple[float, float]:
        enc = tokens * elems_tok * bits / 8.0
        return float(transfer_seconds(enc, p.link_gbps * 1e9 / 8.0)), decode_seconds(dep, step, tokens, p)

    tx_c, dec_c = chunk_times(min(p.chunk_tokens, n))
    last = n - (n_chunks - 1) * p.chunk_tokens if n_chunks else 0  # the last chunk may be shorter
    tx_l, dec_l = chunk_times(last) if n_chunks else (0.0, 0.0)
    if n_chunks:  # n-1 equal chunks, then the last: B of the last starts when its A and the B before are done
        pipe = max(uniform_pipeline_s(tx_c, dec_c, n_chunks - 1), (n_chunks - 1) * tx_c + tx_l) + dec_l
    else:
        pipe = 0.0
    suffix = prefill_step_s(step, q, n) if q else 0.0
    stream_s = pipe + suffix
    recompute_s = prefill_step_s(step, n + q, 0.0)
    enc_total = n * elems_tok * bits / 8.0
    tx_total = float(transfer_seconds(enc_total, p.link_gbps * 1e9 / 8.0))
    return StreamTTFT(level=p.level, bits_per_element=bits, encoded_bytes=enc_total, transfer_s=tx_total,
                      decode_s=max(n_chunks - 1, 0) * dec_c + dec_l,
                      stream_s=stream_s, recompute_s=recompute_s,
                      choice="stream" if stream_s <= recompute_s else "recompute")


def ttft_vs_bandwidth(dep: Deployment, p: StreamParams, link_gbps: list[float]) -> list[StreamTTFT]:
    """:func:`stream_ttft` at each bandwidth (Gbit/s), other parameters as in ``p``."""
    return [stream_ttft(dep, p.model_copy(update={"link_gbps": float(g)})) for g in link_gbps]
