"""MagicPIG: LSH sampling with attention on the CPU (Chen et al., arXiv 2410.16179; METHODS.md 1.2;
repo v0.2 ``models/attnserver.py``).

Notation: ``K`` hash bits, ``L`` tables, ``L_s`` sparse layers (all but ``dense_layers``),
``S' = S - sink - local - gen`` tokens offloaded to the host, ``frac(K, L)`` sampled fraction.

Placement. GPU: dense layers' full KV; per sparse layer a buffer of ``sink + local`` prompt
tokens plus up to ``gen_buffer`` generated tokens (attended densely, FlashInfer); one shared
projector ``d x K L`` in bf16 (``projector_bytes``: 128*10*150*2 = 384,000 B, Table 8); the prefill's
one-layer staging K/V for the longest prompt (``prefill_buffer_bytes``: prefill goes layer by layer,
so a request's whole prompt KV is never on the GPU at once).
Host, per request (whole replica; Table 8 check: Llama-3.1-8B (10,150) at 96K has
30*8*150*98,304*4 B = 14.2 GB of hash tables, 64K with int16 indices 4.7 GB)::

    KV      L_s * 2 * n_kv * d * kvb * S'       (kvb: the KV dtype's bytes, 2 for bf16: the host copy is the GPU's)
    norms   L_s * n_kv * S' * 4 B
    tables  L_s * n_kv * L * S' * b_idx        (b_idx = 2 B if S <= 65,536 else 4 B)
    buckets L_s * n_kv * L * 2^K * 8 B         (bucket start/end arrays)

Decode, per sparse layer and step (``Hq`` query heads, B sequences):
* GPU: query hash codes ``2 d K L`` FLOPs per query head (projector read once), attention over
  the GPU buffer, ``merge_state`` of the GPU and CPU partial outputs (log-sum-exp);
* PCIe: ``B Hq (2d + 4L)`` B to the host (bf16 query + L int32 codes) and ``B Hq (2d + 4)`` B
  back (output + LSE), and ONE synchronous round trip per sparse layer per step;
* CPU (``op=cpu_attn``, bf16), per query head (GQA: each query head samples its own set):
  ``L`` bucket lookups (8 B), a scan of ``L S' / 2^K`` candidate indices (``b_idx`` B, 2 ops),
  then ``|S| = frac S'`` sampled keys read at ``2 d kvb + 4`` B (K and V in the KV dtype + fp32 norm) and
  ``4d + 10`` FLOPs (QK, PV, the ``-log u_i`` correction and exp [E]).
Dense layers run full attention on the GPU.

Sampled fraction: the closed form ``1 - (1-p^K)^L - L p^K (1-p^K)^(L-1)`` depends on the
data through the collision probability ``p``; kvsim uses the measured Table 9 fractions
(K in 8..11, L in 75..300, linear interpolation in L) and the closed form only outside the
table, with ``p = 0.515`` (the value that fits every Table 9 entry within 0.505-0.527 [DERIVED]).

Prefill: full GPU prefill; the offloaded KV, key norms and sorted hash tables (int16 codes +
int32 indices, as the code copies them) go over PCIe; the GPU hashes keys (``2 d K L`` FLOPs
per key per KV head) and radix-sorts the codes (~26 B of HBM traffic per table entry [E]);
the CPU builds the tables. v0.2 overlaps table construction with prefill: these parts share
``overlap="prefill_tables"``. Chunked prefill keeps the prompt's KV on the GPU until the
prompt completes (the repo prefills whole prompts), so the prefill peak is the full KV.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.methods._common import (
    arr, dense_layer_list, gpu_pass, has, host_kv_tok_layer, kv_tok_layer, require_not_mla, split_prompt, sum_seq,
)
from kvsim.methods._published import published
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency
from kvsim.specbase import Float, Int

#: Table 9 (MagicPIG App.): measured sampled fraction (%) by K (rows) and L (columns)
TABLE9_L = (75, 100, 120, 150, 200, 300)
TABLE9_PCT = {
    8: (5, 8, 11, 15, 22, 36),
    9: (1.6, 2.7, 4, 5.4, 8.5, 15.4),
    10: (0.5, 0.9, 1.5, 2, 3, 6),
    11: (0.15, 0.3, 0.5, 0.6, 1, 2),
}
INT16_MAX_TOKENS = 65_536
SORT_BYTES_PER_ENTRY = 26.0  # int16 code written (2) + 2 radix passes r+w of int16 key + int32 value (24) [E]
CPU_FLOPS_PER_SAMPLE_EXTRA = 10.0  # -log(u_i) correction, exp, max [E]


def _index_bytes(n: np.ndarray) -> np.ndarray:
    """Bytes of a hash-table index of a request holding ``n`` tokens: int16 up to 65,536 tokens,
    else int32 (``np.where(n <= INT16_MAX_TOKENS, 2.0, 4.0)``, without where's slow scalar path)."""
    return 4.0 - 2.0 * (n <= INT16_MAX_TOKENS)


def collision_fraction(K: int, L: int, p: float) -> float:
    """P(a key collides with the query in >= 2 of L tables of K bits), METHODS.md 1.2."""
    pk = p**K
    return 1.0 - (1.0 - pk) ** L - L * pk * (1.0 - pk) ** (L - 1)


def sample_fraction(K: int, L: int, p: float = 0.515) -> float:
    """Expected sampled fraction of the offloaded keys: Table 9 if covered, else the closed form."""
    if K in TABLE9_PCT and TABLE9_L[0] <= L <= TABLE9_L[-1]:
        return float(np.interp(L, TABLE9_L, TABLE9_PCT[K])) / 100.0
    return collision_fraction(K, L, p)


class MagicPIGParams(MethodParams):
    K: Int = Field(10, ge=1, le=16)
    """hash bits per table (paper default (10,150); K = 8-10 recommended)."""
    L: Int = Field(150, ge=1)
    """hash tables."""
    sink: Int = Field(4, ge=0)
    local: Int = Field(64, ge=0)
    """static GPU buffer: sink + local prompt tokens per sparse layer (24 local for lm-eval)."""
    gen_buffer: Int = Field(256, ge=0)
    """generated tokens kept on the GPU per sparse layer (beyond it they are offloaded)."""
    dense_layers: Literal["auto"] | list[Int] = "auto"
    """layers kept dense on the GPU; auto = every 16th from 0 ({0,16} for 32 layers; the repo's
    default [0,16,32,48,64] for 80) -- reproduces all of Table 8 (70B: 75 sparse layers -> 11.8 GB)."""
    sample_fraction: Float | None = Field(None, gt=0, le=1)
    """override the expected sampled fraction (default: Table 9 / closed form)."""
    collision_p: Float = Field(0.515, gt=0, lt=1)
    """collision probability of the closed-form fallback (fitted to Table 9)."""


class MagicPIG(KVMethod):
    name = "magicpig"
    summary = "MagicPIG LSH sampling: sparse layers' KV + hash tables in host memory, attention on the CPU"
    Params = MagicPIGParams
    uses_host = True
    prompt_aware = True  # generated tokens stay in the GPU buffer (gen_buffer)
    # prefill runs layer by layer through one layer's staging K/V buffer (fixed_gpu_bytes) and hands each
    # layer's KV to the attention server before the next (github.com/Infini-AI-Lab/MagicPiG models/llama.py:
    # LLM.__init__ allocates k_cache/v_cache of (max_length, kv_heads, head_dim); layer_prefill fills them,
    # attention_server.fill moves them out): the whole prompt's KV is never on the GPU at once
    full_prompt_until_prefilled = False
    linear_residency = False  # dense layers + GPU buffers, the rest on the host
    constant_decode_fields = (  # per sequence: its query hashed, sent to the CPU and merged; kernel launches
        ("attn_decode", "launches"), ("attn_decode", "tiles"), ("attn_local", "launches"), ("attn_local", "tiles"),
        ("lsh_query_hash", "flops"), ("lsh_query_hash", "hbm_bytes"), ("lsh_query_hash", "launches"),
        ("lsh_pcie", "pcie_bytes"), ("lsh_pcie", "pcie_round_trips"), ("lsh_cpu_attn", "launches"),
        ("merge_state", "flops"), ("merge_state", "hbm_bytes"), ("merge_state", "launches"))

    def check(self) -> None:
        require_not_mla(self.dep, "magicpig", "its tables hash per-head keys; MLA has one shared latent")

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p, m = self.params, dep.model
        self.dense = dense_layer_list(p.dense_layers, m.attn_layers)
        self.Ld = float(len(self.dense))
        self.Ls = float(m.attn_layers) - self.Ld
        self.frac = p.sample_fraction or sample_fraction(p.K, p.L, p.collision_p)
        self.static = float(p.sink + p.local)

    # ----- memory -----
    def _split(self, n: np.ndarray, n_prompt) -> tuple[np.ndarray, np.ndarray]:
        """(tokens in the GPU buffer of a sparse layer, tokens offloaded S') of n cached tokens."""
        _, g = split_prompt(n, n_prompt)
        gpu = np.minimum(n, self.static) + np.minimum(g, self.params.gen_buffer)
        return gpu, np.maximum(n - gpu, 0.0)

    def host_breakdown(self, n_tokens: Num, n_prompt: Num | None = None) -> dict[str, Num]:
        """Host bytes per request by component (METHODS.md 1.2, Table 8)."""
        n = arr(n_tokens)
        _, s = self._split(n, n_prompt)
        return self._host(n, s)

    def _host(self, n: np.ndarray, s: np.ndarray) -> dict[str, Num]:
        """:meth:`host_breakdown` of ``n`` cached tokens of which ``s`` are offloaded."""
        p, m, dep = self.params, self.dep.model, self.dep
        b_idx = _index_bytes(n)
        heads = self.Ls * m.num_kv_heads
        return {
            "kv": self.Ls * host_kv_tok_layer(dep, dep.kvb) * s,
            "key_norms": heads * s * 4.0,
            "hash_tables": heads * p.L * s * b_idx,
            "buckets": heads * p.L * 2.0**p.K * 8.0 * has(s),
        }

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        gpu_tok, s = self._split(n, n_prompt)  # (once for the GPU and the host bytes)
        kv = kv_tok_layer(self.dep)
        host = sum(self._host(n, s).values())
        return Residency(gpu_bytes=(self.Ld * n + self.Ls * gpu_tok) * kv, host_bytes=host)

    def projector_bytes(self) -> float:
        """The shared random projector ``d x K L`` (bf16): 384,000 B for d=128, (10,150)."""
        return self.dep.model.head_dim * self.params.K * self.params.L * self.dep.ab

    def prefill_buffer_bytes(self) -> float:
        """The prefill's one-layer staging K and V for the longest prompt (the model's context;
        MagicPiG's ``LLM.k_cache``/``v_cache``), per GPU: Llama-3.1-8B 131,072 x 8 x 128 x 2 x 2 B
        = 536,870,912 B."""
        return self.dep.model.max_context_tokens * kv_tok_layer(self.dep)

    def fixed_gpu_bytes(self) -> float:
        """The projector and the prefill's staging buffer."""
        return self.projector_bytes() + self.prefill_buffer_bytes()

    # ----- decode -----
    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, m, p = self.dep, self.dep.model, self.params
        ctx = arr(ctx)
        n = ctx + 1.0
        B = float(ctx.shape[-1]) if ctx.ndim else 1.0
        zero = 0.0 * sum_seq(ctx)  # per-step shape for scalar amounts
        gpu_tok, s = self._split(ctx, n_prompt)
        d, ab, hq_gpu, Ls = m.head_dim, dep.ab, dep.q_heads_per_gpu, self.Ls
        parts = decode_attention(dep, n, layers=self.Ld).parts if self.Ld else ()  # (distinct names: no merging)
        if not Ls:
            return Cost(parts)
        parts += decode_attention(dep, gpu_tok + 1.0, layers=Ls, name="attn_local").parts
        KL = p.K * p.L
        parts += gpu_pass(
            dep, "lsh_query_hash", op="gemm",
            flops=Ls * B * hq_gpu * 2.0 * d * KL + zero,
            hbm=Ls * (d * KL * ab + B * hq_gpu * (d * ab + 4.0 * p.L)) + zero,
            launches=3.0 * Ls).parts
        to_cpu = B * hq_gpu * (d * ab + 4.0 * p.L)
        back = B * hq_gpu * (d * ab + 4.0)
        parts += (Part("lsh_pcie", "pcie", device="pcie", pcie_bytes=Ls * (to_cpu + back) + zero,
                       pcie_round_trips=Ls + zero),)
        # host CPU, all query heads of the replica
        hq = float(m.num_heads)
        b_idx = _index_bytes(ctx)
        cand = p.L * s / 2.0**p.K
        sampled = self.frac * s
        dram = Ls * hq * sum_seq(p.L * 8.0 + cand * b_idx + sampled * (2.0 * d * dep.kvb + 4.0))
        ops = Ls * hq * sum_seq(p.L + 2.0 * cand + sampled * (4.0 * d + CPU_FLOPS_PER_SAMPLE_EXTRA))
        parts += (Part("lsh_cpu_attn", "cpu_attn", device="cpu", dtype="bf16", cpu_flops=ops,
                       dram_bytes=dram, launches=Ls + zero),)
        parts += gpu_pass(dep, "merge_state", flops=Ls * B * hq_gpu * (d * 4.0) + zero,
                          hbm=Ls * B * hq_gpu * (3.0 * d * ab + 8.0) + zero, launches=Ls).parts
        return Cost(parts)

    # ----- prefill -----
    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, p = self.dep, self.dep.model, self.params
        n_new, n_cached = arr(n_new), arr(n_cached)
        off_total = lambda x: np.maximum(x - self.static, 0.0)  # noqa: E731
        chunk_off = off_total(n_cached + n_new) - off_total(n_cached)  # [R] tokens each chunk offloads
        off = sum_seq(chunk_off)  # tokens offloaded by these chunks
        b_idx = sum_seq(np.where(n_cached + n_new <= INT16_MAX_TOKENS, 2.0, 4.0) * chunk_off)
        d, Ls, kv_gpu = m.head_dim, self.Ls, dep.kv_heads_per_gpu
        tag = "prefill_tables"  # (every part overlaps the others)
        attn = prefill_attention(dep, n_new, n_cached, overlap=tag)
        live = has(off)
        ent_gpu = Ls * kv_gpu * p.L * off  # table entries made on this GPU
        hashing = gpu_pass(dep, "lsh_build_gpu", op="gemm",
                           flops=Ls * kv_gpu * off * 2.0 * d * p.K * p.L,
                           hbm=Ls * kv_gpu * off * d * dep.kvb + ent_gpu * SORT_BYTES_PER_ENTRY,
                           launches=3.0 * Ls * kv_gpu * live, overlap=tag)
        pcie = Part("kv_offload", "pcie", device="pcie",
                    pcie_bytes=Ls * off * (kv_tok_layer(dep) + kv_gpu * 4.0) + ent_gpu * (2.0 + 4.0), overlap=tag)
        ent = Ls * m.num_kv_heads * p.L * off  # whole replica, on the shared host
        cpu = Part("lsh_build_cpu", "cpu_attn", device="cpu", dtype="bf16",
                   cpu_flops=2.0 * ent,
                   dram_bytes=ent * 6.0 + Ls * m.num_kv_heads * p.L * b_idx
                   + Ls * m.num_kv_heads * p.L * 2.0**p.K * 8.0 * live
                   + Ls * off * (host_kv_tok_layer(dep, dep.kvb) + m.num_kv_heads * 4.0),
                   launches=Ls * live, overlap=tag)
        # (the parts have distinct names: the tuple is what ``attn + hashing + pcie + cpu`` merges to)
        return Cost(attn.parts + hashing.parts + (pcie, cpu))

    def published_accuracy(self) -> list[PublishedAccuracy]:
        return published("magicpig", (self.params.K, self.params.L), self.label())
