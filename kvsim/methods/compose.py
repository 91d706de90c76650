"""Composition of KV methods: ``--method kivi+quest`` (the tutorial's "integration of multiple
techniques": quantize what eviction keeps, quantize what sparse attention reads).

Rules. Each method declares a ``role`` (:class:`~kvsim.methods.base.KVMethod`):

* ``storage`` (KIVI): decides *how* each cached token is stored (bytes per KV element);
* ``selection`` (H2O, SnapKV, PyramidKV, CAKE, StreamingLLM, Quest, TopK, oracle sampling,
  DuoAttention, RazorAttention, Locret, Elastic Cache, EMS, KVCrush): decides *which* tokens
  are kept in GPU memory and which are read by a decode step, whatever their format;
* anything else (``None``: full, MLA/X-EcoMLA/KV-head merging/NSA/MoBA change the cache's
  shape; MagicPIG/InfLLM/A^2ATS keep the KV on the host in their own format; LLMLingua and
  prefix caching act on the prompt; MiKV, GEAR and ZipCache choose *and* store) is complete
  on its own and does not compose.

A composition is exactly one storage method and one selection method, in either order.
Refused with the reason: two of one role (two evictors would each decide what is kept; two
storage formats of the same bytes), or a method without a role.

Pricing of ``S + T`` (S storage, T selection), per GPU. T prices its KV through the
deployment's bytes per KV element ``b`` (:func:`kvsim.costmodel.attention.kv_bytes_per_token_layer`
and friends); its other bytes (scores, page metadata, activations) do not depend on ``b``.
So T priced with ``b = beta_S`` (S's stored bytes per element: KIVI ``bits/8 + 2 s_b / G`` =
0.375 B at 2 bits, G = 32) is T's cache stored in S's format, and the derivative of T's bytes
with respect to ``b`` counts T's KV elements [DERIVED: T's bytes are affine in ``b``]:

* resident ``kv(n) = T_beta.gpu(n) + L (E/2)(s_b - beta)(min(t, R/2) + min(t, R))`` with
  ``t = (T_{beta+1}.gpu(n) - T_beta.gpu(n)) / (L E)`` the KV tokens T keeps per layer, ``E``
  the KV elements per token and layer on the GPU: KIVI's 16-bit residual (R/2 keys, R values,
  KIVI §3.3) kept within what T keeps;
* decode = ``T_beta.decode(ctx)`` + the residual's extra bytes (as above, at ``t(ctx + 1)``)
  + dequantization of the KV elements T moves, ``2 X`` FLOPs with
  ``X = hbm(T_{beta+1}) - hbm(T_beta)`` (KIVI's fused kernel, METHODS.md 1.1; the residual's
  few elements are counted too) + S's per-step quantize pass (one token of K and V);
* prefill = ``T.prefill`` at the deployment's KV dtype (exact attention over the 16-bit prompt,
  as KIVI prefills: "the exact key and value tensors are passed to the next layers") + one
  quantize pass over the new tokens (``5`` FLOPs per element; the 16-bit KV read; the code
  write is T's KV write).

Traits follow the parts: prompt-aware, bounded, prompt compression and additivity from T;
not linear in tokens (KIVI's residual window), so no prefix-block sharing; S's quantize pass
appears in both decode and prefill (``shared_step_parts``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.cost import Cost, Num
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods._common import arr, elems_tok_layer, gpu_pass, has, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency
from kvsim.methods.kivi import DEQUANT_FLOPS_PER_ELEM, QUANT_FLOPS_PER_ELEM

ROLES = ("storage", "selection")
#: why a method without a role does not compose (shown in the error)
WHY_NOT = {
    "full": "it is the uncompressed baseline; use the other method alone",
    "prefix": "prefix blocks are shared only when residency is proportional to tokens, which a 16-bit residual "
              "window or an evicted prompt breaks (not modelled yet)",
    "llmlingua": "it shortens the prompt before the model runs (not modelled with another method yet)",
    "mla": "it is the model's own latent cache", "xecomla": "it replaces the KV with an MLA latent",
    "headmerge": "it merges KV heads (the cache's shape)", "nsa": "its trained branches keep their own caches",
    "moba": "its trained block gate is part of the model",
    "magicpig": "its KV, norms and hash tables live on the host in its own format",
    "infllm": "its blocks live on the host in its own format", "a2ats": "its KV lives on the host, its keys as VQ codes",
    "mikv": "it chooses and stores tokens itself (importance-aware mixed precision)",
    "gear": "it stores tokens in its own format (codes + low-rank + outliers)",
    "zipcache": "it chooses and stores tokens itself (saliency-aware mixed precision)",
}


@dataclass(frozen=True)
class StoredDeployment(Deployment):
    """A deployment whose KV elements cost ``kv_elem_bytes`` each (a storage method's format)."""

    kv_elem_bytes: float = 2.0

    @property
    def kvb(self) -> float:
        return self.kv_elem_bytes


def stored(dep: Deployment, bytes_per_elem: float) -> StoredDeployment:
    f = {k: getattr(dep, k) for k in ("system", "model", "weight_dtype", "kv_dtype", "act_dtype", "tp",
                                       "gpu_memory_utilization")}
    return StoredDeployment(**f, kv_elem_bytes=bytes_per_elem)


class ComposedParams(MethodParams):
    storage: str
    """the storage method's spec (e.g. ``kivi:bits=4``)."""
    selection: str
    """the selection method's spec (e.g. ``quest:page_size=32``)."""
    spec: str
    """the composition as written (its label), e.g. ``kivi:bits=4+quest:page_size=32``."""


def check_roles(parts: list[KVMethod], registry: dict[str, type[KVMethod]]) -> tuple[KVMethod, KVMethod]:
    """``(storage, selection)`` of a two-method composition, or a ConfigError saying why not
    (``registry`` lists the composable methods in the message)."""

    def _names(role: str) -> str:
        return ", ".join(n for n, c in registry.items() if c.role == role)

    names = "+".join(m.name for m in parts)
    if len(parts) != 2:
        raise ConfigError(f"method '{names}': a composition joins exactly two methods, one storage "
                          f"(how tokens are stored) and one selection (which tokens are kept or read)")
    lone = [m.name for m in parts if m.role not in ROLES]
    if lone:
        why = WHY_NOT.get(lone[0], "it is a complete method on its own")
        raise ConfigError(f"method '{names}': {lone[0]} does not compose ({why}); composable: storage "
                          f"{_names('storage')}; selection {_names('selection')}")
    roles = [m.role for m in parts]
    if roles[0] == roles[1]:
        why = ("two evictors or sparse readers would each decide which tokens are kept or read"
               if roles[0] == "selection" else "two storage formats for the same bytes")
        raise ConfigError(f"method '{names}': both are {roles[0]} methods ({why}); compose one storage "
                          f"method ({_names('storage')}) with one selection method")
    s, t = parts if roles[0] == "storage" else parts[::-1]
    return s, t


class Composed(KVMethod):
    """Storage method ``S`` applied to the tokens that selection method ``T`` keeps and reads."""

    name = "composed"
    summary = "a storage method applied to the tokens a selection method keeps and reads"
    Params = ComposedParams
    role = None
    linear_residency = False  # the storage's 16-bit residual window
    shared_step_parts = True  # the quantize pass runs in decode and prefill

    #: the parts' classes and parameters, set by :func:`compose` on the class it makes
    parts: tuple[type[KVMethod], MethodParams, type[KVMethod], MethodParams]

    def __init__(self, dep: Deployment, params: ComposedParams):
        s_cls, s_params, t_cls, t_params = self.parts
        self.S, self.T = s_cls(dep, s_params), t_cls(dep, t_params)
        super().__init__(dep, params)
        beta = self.S.stored_bytes_per_elem()
        self.T_beta = type(self.T)(stored(dep, beta), self.T.params)
        self.T_step = type(self.T)(stored(dep, beta + 1.0), self.T.params)
        self.E = elems_tok_layer(dep)
        self.fe = dep.ab  # the residual and scales are 16-bit (KIVI keeps them in the data dtype)
        self.beta = beta

    def label(self) -> str:
        return self.params.spec

    # --- T's kept tokens and S's residual ---
    def kept_tokens(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        """KV tokens T keeps per layer (mean): the derivative of T's GPU bytes w.r.t. bytes per element."""
        L = self.dep.model.attn_layers
        hi = arr(self.T_step.kv_bytes(n, n_prompt).gpu_bytes)
        lo = arr(self.T_beta.kv_bytes(n, n_prompt).gpu_bytes)
        return (hi - lo) / (L * self.E)

    def residual_bytes(self, t: np.ndarray) -> np.ndarray:
        """Extra bytes per layer of S's 16-bit residual among ``t`` kept tokens: KIVI R/2 keys, R values."""
        rk, rv = self.S.residual_tokens(arr(t))
        return (self.E / 2.0) * (self.fe - self.beta) * (rk + rv)

    # --- the contract ---
    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        L = self.dep.model.attn_layers
        r = self.T_beta.kv_bytes(n_tokens, n_prompt)
        extra = L * self.residual_bytes(self.kept_tokens(n_tokens, n_prompt))
        return Residency(gpu_bytes=arr(r.gpu_bytes) + extra, host_bytes=r.host_bytes)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        L = self.dep.model.attn_layers
        lo = self.T_beta.decode_cost(ctx, n_prompt)
        moved = self.T_step.decode_cost(ctx, n_prompt).total("hbm_bytes") - lo.total("hbm_bytes")
        res = L * sum_seq(self.residual_bytes(self.kept_tokens(arr(ctx) + 1.0, n_prompt)))
        deq = gpu_pass(self.dep, f"{self.S.name}_dequant", op="attn_decode", flops=DEQUANT_FLOPS_PER_ELEM * moved,
                       hbm=res + 0.0 * moved)
        quant = self.S.decode_cost(ctx).by_name(f"{self.S.name}_quant")
        return lo + deq + Cost.of(quant)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        new = sum_seq(n_new)
        quant = gpu_pass(dep, f"{self.S.name}_quant", flops=L * new * self.E * QUANT_FLOPS_PER_ELEM,
                         hbm=L * new * self.E * self.fe, launches=2.0 * L * has(new))
        return self.T.prefill_cost(n_new, n_cached) + quant

    # --- hooks from the parts ---
    def prefill_scores_bytes(self, n_new: Num, n_cached: Num) -> Num:
        return self.T.prefill_scores_bytes(n_new, n_cached)  # (T's prefill, as prefill_cost)

    def effective_prompt_tokens(self, n_prompt: Num) -> Num:
        return self.T.effective_prompt_tokens(n_prompt)

    def shares_prefix_blocks(self, block_tokens: int) -> bool:
        return False

    def fixed_gpu_bytes(self) -> float:
        return self.S.fixed_gpu_bytes() + self.T.fixed_gpu_bytes()

    def fixed_host_bytes(self) -> float:
        return self.S.fixed_host_bytes() + self.T.fixed_host_bytes()

    def published_accuracy(self) -> list[PublishedAccuracy]:
        return []  # no paper measured the composition


def compose(spec: str, items: list[str], parts: list[KVMethod], registry: dict[str, type[KVMethod]]) -> KVMethod:
    """The composition of ``parts`` (built from the ``+``-separated ``items`` of ``spec``), with traits from its parts."""
    s, t = check_roles(parts, registry)
    s_spec, t_spec = (items[0], items[1]) if parts[0] is s else (items[1], items[0])
    traits = {k: getattr(type(t), k) for k in ("prompt_aware", "bounded", "uses_host", "compresses_prompt", "vectorized",
                                               "full_prompt_until_prefilled")}  # (mid-prefill: uncompressed, an upper bound)
    traits["additive_decode"] = type(t).additive_decode and type(s).additive_decode
    traits["own_kv_format"] = type(s).own_kv_format  # (the storage part holds the KV)
    traits["mla_extrapolated"] = "; ".join(w for w in (type(s).mla_extrapolated, type(t).mla_extrapolated) if w) or None
    name = "+".join(m.name for m in parts)  # in the order written
    cls = type(f"Composed_{s.name}_{t.name}", (Composed,),
               {"name": name, "parts": (type(s), s.params, type(t), t.params), **traits})
    return cls(s.dep, ComposedParams(storage=s_spec, selection=t_spec, spec=spec))
