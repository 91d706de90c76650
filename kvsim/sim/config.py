"""Engine settings (vLLM names and defaults) and the result of one replica's simulation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kvsim.pricing.memory import VLLM_BLOCK_TOKENS
from kvsim.sim.kv_cache import KVLayout
from kvsim.sim.kv_offload import KVOffload
from kvsim.sim.metrics import RequestRecords
from kvsim.sim.request import PreemptionMode


#: vLLM v0 ``BlockSpaceManager(watermark=0.01)`` (vllm/core/block_manager.py, v0.6-v0.10)
V0_WATERMARK = 0.01
#: bounds of the engine settings (the CLI options state the same): arrays of one row per running
#: sequence are allocated, and token budgets stay within int32 like trace token counts
MAX_NUM_SEQS = 1_000_000
MAX_NUM_BATCHED_TOKENS = 2**31 - 1


class SimConfig(BaseModel):
    """Engine settings (vLLM names and defaults)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    max_num_seqs: int = Field(256, ge=1, le=MAX_NUM_SEQS, description="running sequences per step")
    max_num_batched_tokens: int = Field(8192, ge=1, le=MAX_NUM_BATCHED_TOKENS, description="token budget per step")
    chunked_prefill: bool = Field(True, description="Sarathi-style chunked prefill (vLLM v1); off: vLLM v0 prefill-first")
    preemption_mode: PreemptionMode = PreemptionMode.RECOMPUTE
    block_size_tokens: int = Field(VLLM_BLOCK_TOKENS, ge=1, description="tokens of uncompressed KV per block")
    enable_prefix_caching: bool = Field(True, description="reuse cached KV blocks: shared prompt blocks (traces with prefix ids) and a RECOMPUTE victim's own blocks when it returns")
    prompt_kv_resident: bool = Field(
        False, description="requests arrive with their prompt's KV already on this replica (the decode instance of "
        "a disaggregated deployment, kvsim.plan.disagg): all but the last prompt token count as computed, the last "
        "is recomputed to sample the first token (vLLM's P/D connectors); prefix caching is off")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="None: the deployment's (0.9)")
    watermark: float | None = Field(
        None, ge=0, lt=1, allow_inf_nan=False,
        description="vLLM v0 free-block watermark: admissions and swap-ins keep int(watermark * GPU blocks) "
        "blocks free; None: 0.01 without chunked prefill (v0 default), 0 with it (v1 has none)")
    reserve_full_prompt: bool = Field(
        False, description="admit a waiting request only when the blocks of all its tokens (prompt, and any generated "
        "before a preemption) fit, not just its first chunk's: vLLM's scheduler_reserve_full_isl, on by default since "
        "vLLM PR #37307 (2026-03); off: earlier vLLM releases")
    kv_offload: KVOffload | None = Field(
        None, description="host DRAM / NVMe KV tiers below the GPU prefix cache (kvsim.sim.kv_tiers); None: off")
    seed: int = Field(0, ge=0, description="kept in results for provenance; the replay itself is deterministic")
    record_token_times: bool = Field(False, description="keep every token's time per request (small runs)")
    slo_ttft_s: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="goodput: a request's bound on its TTFT, seconds (--slo-ttft)")
    slo_tpot_s: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="goodput: a request's bound on its mean time per output token, "
                                     "seconds (--slo-tpot; kvsim.slo)")
    progress: Callable[[int, int, float], None] | None = Field(None, exclude=True)

    def deployment_for(self, dep):
        """``dep`` as this engine runs it: with :attr:`gpu_memory_utilization` when it is set (the
        engine's setting sizes the KV pool and is what provenance records), else ``dep`` itself."""
        if self.gpu_memory_utilization is None:
            return dep
        return replace(dep, gpu_memory_utilization=self.gpu_memory_utilization)

    @field_validator("kv_offload", mode="before")
    @classmethod
    def _offload_text(cls, v):
        """``"host=64GiB,nvme=1TiB"`` (the CLI's spelling) is accepted too."""
        if isinstance(v, str):
            from kvsim.sim.kv_offload import parse_offload

            return parse_offload(v)
        return v

    @property
    def host_tier_bytes(self) -> float:
        """Host memory of the KV offload host tier (0 when off): taken from the host KV pool."""
        off = self.kv_offload
        return off.host_bytes if off is not None and off.enabled else 0.0

    @property
    def effective_watermark(self) -> float:
        """The watermark in force: vLLM v0's ``BlockSpaceManager`` default 0.01 in the whole-prompt
        (v0) mode, 0 in the chunked (v1) mode, unless set."""
        if self.watermark is not None:
            return self.watermark
        return 0.0 if self.chunked_prefill else V0_WATERMARK

    def resolved(self) -> dict:
        """The settings as JSON with the mode-dependent defaults in force (the watermark), so that
        two configurations that run the same simulation compare equal (plan's cache key)."""
        return {**self.model_dump(mode="json"), "watermark": self.effective_watermark}

    def watermark_blocks(self, num_gpu_blocks: int) -> int:
        """``int(watermark * num_gpu_blocks)`` (vLLM v0 ``SelfAttnBlockSpaceManager.__init__``)."""
        return int(self.effective_watermark * num_gpu_blocks)


@dataclass
class SimResult:
    """Summary dict, per-request records, gauge timelines, pooled inter-token intervals."""

    summary: dict
    records: RequestRecords
    timeline: dict[str, np.ndarray]
    tbt_values: np.ndarray
    tbt_weights: np.ndarray
    layout: KVLayout = field(repr=False)
