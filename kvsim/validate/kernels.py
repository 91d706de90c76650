"""Price measured GPU kernels through kvsim's own cost path and state the error.

Each measured row (:mod:`kvsim.validate.kernel_tables`) becomes the :class:`Cost` kvsim would
charge for that call: :func:`kvsim.costmodel.transformer.gemm_cost` for a GEMM,
:func:`kvsim.costmodel.attention.prefill_attention` / ``decode_attention`` of a one-layer model
with the row's heads for attention, :func:`kvsim.costmodel.transformer.allreduce_cost` for an
all-reduce; the roofline of the system turns it into seconds. Rows whose working set fits in
the GPU's L2 cache were measured warm (several L40S rows beat HBM bandwidth by 2x): they are
reported apart and left out of every fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost, Part
from kvsim.costmodel.roofline import Column, Roofline
from kvsim.costmodel.transformer import allreduce_cost, gemm_cost
from kvsim.hardware import System
from kvsim.models import ModelSpec
from kvsim.models.spec import MLASpec
from kvsim.validate.kernel_tables import KernelTable

BF16_BYTES = 2.0
HEAD_DIM = 128  # every attention row of the extract (PROVENANCE.md)


@dataclass(frozen=True)
class PricedRows:
    """kvsim's seconds for each measured row, and what the row's call reads from HBM."""

    predicted_s: np.ndarray
    measured_s: np.ndarray
    working_set_bytes: np.ndarray  # HBM bytes kvsim counts for the call (L2 test)
    l2_resident: np.ndarray  # bool: working set <= L2 size

    @property
    def error(self) -> np.ndarray:
        """Signed relative error ``predicted / measured - 1`` (negative: kvsim too fast)."""
        return self.predicted_s / self.measured_s - 1.0


def kernel_model(heads: int, kv_heads: int) -> ModelSpec:
    """A one-layer model whose attention has the row's heads (head dim 128)."""
    return ModelSpec(name=f"kernel-{heads}h-{kv_heads}kv", architecture="llama", num_layers=1,
                     hidden_size=heads * HEAD_DIM, num_heads=heads, num_kv_heads=kv_heads, head_dim=HEAD_DIM,
                     intermediate_size=HEAD_DIM, vocab_size=1, max_context_tokens=2**22,
                     source="shape of a measured attention kernel")


def mla_kernel_model(heads: int) -> ModelSpec:
    """A one-layer DeepSeek-style MLA model with ``heads`` query heads: latent ``d_c`` 512 plus a
    64-wide RoPE key cached per token (DeepSeek-V2/V3 config.json), as the MLA tables measure."""
    return ModelSpec(name=f"kernel-mla-{heads}h", architecture="deepseek_v3", num_layers=1, hidden_size=heads * HEAD_DIM,
                     num_heads=heads, num_kv_heads=1, head_dim=HEAD_DIM, intermediate_size=HEAD_DIM, vocab_size=1,
                     max_context_tokens=2**22, mla=MLASpec(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                                                           v_head_dim=128),
                     source="shape of a measured MLA decode kernel")


def _deployment(system: System, heads: int, kv_heads: int, mla: bool = False) -> Deployment:
    model = mla_kernel_model(heads) if mla else kernel_model(heads, kv_heads)
    return Deployment(system=system, model=model, weight_dtype="bf16", kv_dtype="bf16", act_dtype="bf16", tp=1)


@dataclass(frozen=True)
class KernelWork:
    """The work kvsim charges for every row of a table, grouped by part template: pricing it on
    another system (or efficiencies) needs only a roofline compile per template."""

    templates: tuple[tuple[Part, tuple[Column, ...], np.ndarray, np.ndarray], ...]  # (part, columns, amounts [n, ncol], rows)
    working_set_bytes: np.ndarray  # HBM bytes kvsim counts for each call (the L2 test)
    rows: int

    def seconds(self, roofline: Roofline) -> np.ndarray:
        out = np.empty(self.rows)
        for part, columns, amounts, idx in self.templates:
            out[idx] = roofline.compile([part], columns).seconds(amounts)
        return out


def _work_of(costs: list[tuple[Cost, np.ndarray]], rows: int) -> KernelWork:
    """Stack one-part costs (array amounts, one per row of ``idx``) by part identity."""
    by_key: dict[tuple, list[tuple[Part, np.ndarray]]] = {}
    ws = np.zeros(rows)
    for cost, idx in costs:
        (part,) = cost.parts
        by_key.setdefault(part.key, []).append((part, idx))
        ws[idx] = np.broadcast_to(part.hbm_bytes, idx.shape)
    templates = []
    for items in by_key.values():
        part = items[0][0]
        fields = [f for f in NUMERIC_FIELDS if any(np.any(getattr(p, f)) for p, _ in items)]
        idx = np.concatenate([i for _, i in items])
        amounts = np.concatenate([np.stack([np.broadcast_to(np.asarray(getattr(p, f), dtype=np.float64), i.shape)
                                            for f in fields], axis=-1) for p, i in items])
        templates.append((part, tuple((0, f) for f in fields), amounts, idx))
    return KernelWork(tuple(templates), ws, rows)


_WORK_CACHE: dict[tuple[int, str], tuple[KernelTable, KernelWork]] = {}


def table_work(table: KernelTable, system: System) -> KernelWork:
    """kvsim's cost of every row of ``table`` (the work does not depend on efficiencies).

    Built once per (table object, GPU): a report, a fit and a held-out split of one table all
    price the same work on rooflines of different efficiencies. The table is kept in the cache
    entry, so its ``id`` cannot be reused by another table while the entry lives.
    """
    key = (id(table), system.gpu.name)
    hit = _WORK_CACHE.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    work = _build_work(table, system)
    _WORK_CACHE[key] = (table, work)
    return work


def _build_work(table: KernelTable, system: System) -> KernelWork:
    c = table.columns
    n = len(table)
    costs: list[tuple[Cost, np.ndarray]] = []
    if table.op == "gemm":
        costs.append((gemm_cost(c["m"], c["n"], c["k"], weight_bytes=BF16_BYTES, act_bytes=BF16_BYTES, dtype="bf16"),
                      np.arange(n)))
    elif table.op in ("attn_prefill", "attn_decode"):
        keys = np.stack([c["heads"], c["kv_heads"], c["batch"]], axis=1)
        for heads, kv_heads, batch in np.unique(keys, axis=0):
            idx = np.flatnonzero((keys == (heads, kv_heads, batch)).all(axis=1))
            dep = _deployment(system, int(heads), int(kv_heads))
            shape = (len(idx), int(batch))
            if table.op == "attn_prefill":
                cost = prefill_attention(dep, np.broadcast_to(c["isl"][idx, None], shape), np.zeros(shape))
            else:  # one query token per sequence attending isl + step cached tokens
                cost = decode_attention(dep, np.broadcast_to((c["isl"] + c["step"])[idx, None], shape))
            costs.append((cost, idx))
    elif table.op == "attn_decode_mla":  # one query token per sequence attending 1 + step latent tokens
        keys = np.stack([c["heads"], c["batch"]], axis=1)
        for heads, batch in np.unique(keys, axis=0):
            idx = np.flatnonzero((keys == (heads, batch)).all(axis=1))
            dep = _deployment(system, int(heads), 1, mla=True)
            costs.append((decode_attention(dep, np.broadcast_to((1.0 + c["step"])[idx, None], (len(idx), int(batch)))), idx))
    elif table.op == "allreduce":
        for group in np.unique(c["num_gpus"]):
            idx = np.flatnonzero(c["num_gpus"] == group)
            costs.append((allreduce_cost(int(group), c["message_elems"][idx], BF16_BYTES), idx))
    else:
        raise ValueError(f"unknown op class {table.op}")
    work = _work_of(costs, n)
    if table.op == "allreduce":
        return KernelWork(work.templates, np.full(n, np.inf), n)  # never L2-resident
    return work


def price_table(table: KernelTable, system: System, roofline: Roofline | None = None,
                work: KernelWork | None = None) -> PricedRows:
    """kvsim's time of every row of ``table`` on ``system``."""
    work = work or table_work(table, system)
    pred = work.seconds(roofline or Roofline(system))
    return PricedRows(pred, table.latency_s, work.working_set_bytes, work.working_set_bytes <= system.gpu.l2_bytes)


@dataclass(frozen=True)
class ErrorStats:
    rows: int
    median_abs: float
    p90_abs: float
    bias: float  # median signed error

    def as_dict(self) -> dict:
        return {"rows": self.rows, "median_abs": self.median_abs, "p90_abs": self.p90_abs, "bias": self.bias}


def error_stats(err: np.ndarray) -> ErrorStats | None:
    """Median and 90th percentile of |error|, and the median signed error (None: no rows)."""
    if len(err) == 0:
        return None
    a = np.abs(err)
    return ErrorStats(int(len(err)), float(np.median(a)), float(np.percentile(a, 90)), float(np.median(err)))


def holdout_mask(table: KernelTable) -> np.ndarray:
    """Rows held out from a fit (True), split by shape so that no held-out shape was seen:
    GEMM by weight shape ``(n, k)``, attention by ``(heads, kv_heads)``, all-reduce by message
    size within each algorithm and group. Every other key, in sorted order, is held out."""
    c = table.columns
    if table.op == "gemm":
        key = np.stack([c["n"], c["k"]], axis=1)
    elif table.op in ("attn_prefill", "attn_decode"):
        key = np.stack([c["heads"], c["kv_heads"]], axis=1)
    elif table.op == "attn_decode_mla":
        key = c["heads"][:, None]
    else:
        key = c["message_elems"][:, None]
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    return (inverse.reshape(-1) % 2) == 1
