"""The KV-cache method contract.

A method is one module with a :class:`KVMethod` subclass (and its pydantic ``Params``
whose defaults are the paper's), registered with one line in :mod:`kvsim.methods`.
It answers three questions for a :class:`~kvsim.costmodel.deployment.Deployment`:

1. ``kv_bytes(n)``: bytes resident per request on each GPU and on the host when
   ``n`` tokens are in its context (arrays allowed);
2. ``decode_cost(ctx)``: the attention work of one decode step for a batch whose
   sequences hold ``ctx`` tokens (array ``[..., B]``) *before* the step: KV reads,
   the new token's KV write, extra compute (dequantization, scoring, hashing), host
   work, PCIe traffic and round trips. The model's weight GEMMs are priced elsewhere
   (:func:`kvsim.costmodel.transformer.linear_cost`) and are shared by every method;
3. ``prefill_cost(n_new, n_cached)``: the attention of prefill chunks (arrays ``[R]``)
   plus the method's extra prefill work (quantizing, scoring, building tables,
   offloading over PCIe, a compressor model's pass).

Methods that evict or compress at the end of prefill (H2O, SnapKV, PyramidKV, RazorAttention,
GEAR, MagicPIG: ``prompt_aware``) treat prompt and generated tokens differently: ``kv_bytes``
and ``decode_cost`` take an optional ``n_prompt`` (same shape as, or broadcastable to,
``n_tokens`` / ``ctx``). When it is ``None`` every cached token counts as prompt (the state
right after prefill).

What a method is (prompt-aware, bounded, host-resident, linear residency, prompt
compression, additive decode, decode/prefill parts shared, vectorized) is declared as
class-level traits below; ``tests/test_methods_contract.py`` checks each against behaviour.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import model_validator

from kvsim.costmodel.cost import Cost, Num
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.specbase import Strict


class MethodParams(Strict):
    """Base of every method's parameters (frozen, unknown fields rejected)."""


class WindowedParams(MethodParams):
    """Parameters of an observation-window evictor (SnapKV and its kin): the window's tokens are
    part of the kept ``capacity``, so ``window < capacity`` (subclasses define both fields; a
    ``capacity`` of None means the budget is set another way and is not checked)."""

    @model_validator(mode="after")
    def _window_fits(self):
        if self.capacity is not None and self.window >= self.capacity:
            raise ValueError(f"window ({self.window}) must be smaller than capacity ({self.capacity})")
        return self


@dataclass(frozen=True)
class Residency:
    """Bytes resident per request (per GPU of the replica, and on the host)."""

    gpu_bytes: Num
    host_bytes: Num = 0.0


@dataclass(frozen=True)
class PublishedAccuracy:
    """A published quality number for one configuration (METHODS.md §4)."""

    benchmark: str
    model: str
    config: str
    score: float
    full_score: float
    source: str


class KVMethod(ABC):
    """Base class: subclasses set ``name``, ``summary``, ``Params`` and implement the three costs."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams

    # --- traits: what the method is, declared here and checked by tests/test_methods_contract.py ---
    # Each trait has a safe value (the simulator's general path) and an optimistic one that
    # unlocks a shortcut; an optimistic declaration must hold for every parameter setting.
    #: ``kv_bytes`` or ``decode_cost`` depends on how many cached tokens are prompt
    #: (``n_prompt``): the method evicts or compresses at the end of prefill. Safe: True.
    prompt_aware: ClassVar[bool] = False
    #: the prompt's full KV stays resident until its prefill completes, and only then is it selected,
    #: evicted, merged, compressed or offloaded (H2O, SnapKV and its kin but CAKE, RazorAttention, GEAR,
    #: Elastic Cache, MiKV, ZipCache: each needs the whole prompt's attention or KV first). The
    #: simulators then give a prompt chunk the blocks of every computed token uncompressed, the
    #: completing step ``max(full, kv_bytes(P, P))``, and release down to ``kv_bytes(P, P)`` when the
    #: prompt completes. ``kv_bytes(n, P)`` stays the state after prefill. Safe: True.
    full_prompt_until_prefilled: ClassVar[bool] = False
    #: the method stores its KV in a format of its own (quantized codes with their scales, low-rank
    #: factors, a 16-bit residual), so the deployment's KV dtype (``--kv-dtype``) changes none of its
    #: resident bytes (KIVI, GEAR, MiKV, ZipCache). Informational: the CLI says so when ``--kv-dtype``
    #: is given. Safe: False.
    own_kv_format: ClassVar[bool] = False
    #: on an MLA model (one shared latent per token instead of per-head K and V) the method's
    #: formulas are applied to the latent although no paper measured it there: why, in a few words
    #: (None: defined on MLA, or refused by ``check``). Informational: estimate and simulate say so.
    mla_extrapolated: ClassVar[str | None] = None
    #: a request's resident bytes stop growing at a budget: with the prompt fixed,
    #: ``kv_bytes(P + g, P)`` (GPU and host) is constant once ``g`` generated tokens pass it.
    #: Informational (no shortcut depends on it).
    bounded: ClassVar[bool] = False
    #: the method keeps KV (or indexes) in host memory (``kv_bytes(n).host_bytes`` > 0 or
    #: ``fixed_host_bytes`` > 0). Safe: True.
    uses_host: ClassVar[bool] = False
    #: GPU residency is exactly proportional to tokens (``kv_bytes(n).gpu_bytes == n * c``,
    #: whatever ``n_prompt``) and nothing is on the host, so a prompt block's KV is the same
    #: bytes in every request and prefix caching may share it. Safe: False.
    linear_residency: ClassVar[bool] = True
    #: the model prefills fewer tokens than the prompt holds (``effective_prompt_tokens(p) != p``,
    #: LLMLingua). Safe: True.
    compresses_prompt: ClassVar[bool] = False
    #: decode cost is separable: every numeric field of every part of ``decode_cost(ctx[, n_prompt])``
    #: equals ``sum_i g(ctx_i[, n_prompt_i]) + h(B)`` (``B`` sequences) and the parts (``Part.key``)
    #: do not depend on the context values, so decode prices can be tabulated per sequence. Safe: False.
    additive_decode: ClassVar[bool] = True
    #: decode fields a batch pays once if any of its sequences needs them (InfLLM's block-score
    #: launches and PCIe round trip per layer): ``(part name, field)`` pairs whose batch amount is
    #: ``max_i g(ctx_i[, n_prompt_i])`` with every ``g`` either 0 or one constant. With
    #: ``additive_decode`` the other fields are separable; these are summed and capped at the
    #: constant in the fast tables. Safe: () (and additive_decode False).
    once_per_batch_decode: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: some part of ``decode_cost`` and some part of ``prefill_cost`` have the same ``Part.key``
    #: or overlap tag (KIVI and GEAR quantize in both), so a mixed step must be priced jointly.
    #: Method parts never share a key or tag with the linear layers' or the step overhead's. Safe: True.
    shared_step_parts: ClassVar[bool] = False
    #: ``kv_bytes``, ``decode_cost`` (``[B]`` and ``[k, B]`` contexts), ``prefill_cost`` and
    #: ``effective_prompt_tokens`` accept numpy arrays and price each element as a scalar call
    #: would. Safe: False.
    vectorized: ClassVar[bool] = True
    #: decode fields that are one constant per sequence: ``(part name, field)`` pairs of
    #: ``decode_cost`` whose amount for one sequence is the same at every context and prompt
    #: (MagicPIG's query hashing and PCIe round trip; an attention kernel's launches). The fast
    #: simulator's per-request rows leave them out and add ``B`` times the constant per step
    #: (:mod:`kvsim.sim.fast.folding`; a chunk of rows that breaks a declaration makes it
    #: rebuild the rows with every field, same prices). Safe: () (every field in the rows).
    constant_decode_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: what the method contributes to a ``+`` composition (:mod:`kvsim.methods.compose`):
    #: ``"storage"`` (how each cached token is stored: it then also implements
    #: ``stored_bytes_per_elem`` and ``residual_tokens``), ``"selection"`` (which tokens are kept
    #: and read, pricing its KV through ``dep.kvb``), or ``None`` (complete on its own; does not compose).
    role: ClassVar[str | None] = None

    def shares_prefix_blocks(self, block_tokens: int) -> bool:
        """Can a prefix-cache entry of ``block_tokens`` prompt tokens be shared by requests?

        True when the entry is the same bytes in every request: residency at multiples of
        ``block_tokens`` is additive (``kv_bytes(e * b) == e * kv_bytes(b)``), on the GPU
        only, independent of the rest of the prompt, and the prompt is prefilled as written.
        Derived from the traits; a method whose residency is linear only on a grid (Quest's
        pages) overrides it. Checked by the contract test."""
        return (self.linear_residency and not self.uses_host and not self.prompt_aware
                and not self.compresses_prompt)

    def __init__(self, dep: Deployment, params: MethodParams | None = None):
        self.dep = dep
        self.params = params if params is not None else self.Params()
        self.check()

    def check(self) -> None:
        """Raise ConfigError if the method cannot run this deployment."""

    # --- the contract ---
    @abstractmethod
    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency: ...

    @abstractmethod
    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost: ...

    @abstractmethod
    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost: ...

    # --- optional hooks with neutral defaults ---
    def effective_prompt_tokens(self, n_prompt: Num) -> Num:
        """Prompt tokens the target model actually prefills (prompt compression shrinks it)."""
        return n_prompt

    def cached_prompt_fraction(self) -> float:
        """Analytic prefix-cache hit ratio: the fraction of each prompt whose KV is reused
        instead of prefilled (``prefix`` method). Callers without real prefix-block
        bookkeeping split a prompt with :meth:`split_prompt`; 0 for every other method."""
        return 0.0

    def split_prompt(self, n_prompt: Num) -> tuple[Num, Num]:
        """``(n_new, n_cached)`` of a whole prompt under :meth:`cached_prompt_fraction`."""
        f = self.cached_prompt_fraction()
        return n_prompt * (1.0 - f), n_prompt * f

    def fixed_gpu_bytes(self) -> float:
        """Bytes per GPU independent of requests (e.g. MagicPIG's shared LSH projector)."""
        return 0.0

    def fixed_host_bytes(self) -> float:
        return 0.0

    def label(self) -> str:
        """Name plus non-default params, e.g. ``kivi(bits=4)``."""
        diff = {k: v for k, v in self.params.model_dump().items() if self.Params.model_fields[k].default != v}
        if not diff:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in diff.items()) + ")"

    def mla_note(self) -> str | None:
        """One line for the user when the method is extrapolated to this deployment's MLA model."""
        why = type(self).mla_extrapolated
        if why is None or self.dep.model.mla is None:
            return None
        return (f"extrapolated to {self.dep.model.name}'s MLA latent (one shared latent per token; no paper "
                f"measured the method on one): {why}")

    def prefill_scores_bytes(self, n_new: Num, n_cached: Num) -> Num:
        """Bytes per GPU of one layer's attention scores that a prefill chunk of ``n_new`` tokens after
        ``n_cached`` materializes at once (eager attention: H2O, MiKV, Elastic Cache); 0 for a kernel
        that never writes them (FlashAttention). Transient activation memory: priced as HBM traffic
        in ``prefill_cost``, not reserved by the engine's memory budget; notes say when it exceeds
        the activation reserve (:func:`kvsim.pricing.input_notes.eager_scores_note`)."""
        return 0.0

    def published_accuracy(self) -> list[PublishedAccuracy]:
        return []


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)
