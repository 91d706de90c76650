"""The SCBench-style shared-context generator: prompts and prefix ids of both sharing modes,
option errors, and the offload tiers serving its contexts."""

import numpy as np
import pytest

from kvsim.errors import TraceError
from kvsim.traces import load_trace

SPEC = "synthetic-scbench:n=6,turns=3,contexts=1,context=1100,query=100,output=50,block=512,gap=10,rate=0.1"


def test_multi_turn_prompts_grow_and_extend_the_stream():
    """Multi-turn: turn k = 1,100 context + k x (100 + 50) history + 100 query = 1,200 / 1,350 / 1,500;
    the context's two full 512-token blocks (ids 0, 1) are shared by both sessions (one context),
    and each session's stream continues with ids of its own."""
    t = load_trace(SPEC + ",mode=multi-turn")
    assert t.prompt_tokens.tolist() == [1200, 1350, 1500] * 2
    assert t.prefix_block_tokens == 512
    assert [b[:2] for b in t.prefix_blocks] == [(0, 1)] * 6
    s1, s2 = t.prefix_blocks[:3], t.prefix_blocks[3:]
    assert s1 == ((0, 1, 2), (0, 1, 2), (0, 1, 2)) and s2 == ((0, 1, 3),) * 3  # ceil(1500 / 512) = 3 ids
    assert np.all(np.diff(t.arrival_s) >= 0)
    assert t.arrival_s[1] - t.arrival_s[0] == pytest.approx(10.0)  # gap between turns


def test_multi_request_shares_only_the_context():
    """Multi-request: every prompt is 1,100 + 100 = 1,200 tokens; the ids after the shared context
    blocks differ between all requests."""
    t = load_trace(SPEC + ",mode=multi-request")
    assert t.prompt_tokens.tolist() == [1200] * 6
    assert all(b[:2] == (0, 1) for b in t.prefix_blocks)
    assert len({b[2] for b in t.prefix_blocks}) == 6


def test_bad_options_are_trace_errors():
    for bad in ("mode=both", "turns=0", "context=0", "gap=-1", "colour=red"):
        with pytest.raises(TraceError):
            load_trace(f"synthetic-scbench:n=4,{bad}")


def test_host_tier_serves_scbench_contexts_the_gpu_evicted():
    """Eight 8,192-token contexts (512 blocks each), 16 sessions of 4 turns, a 1,500-block GPU pool that
    cannot keep them cached between turns: a 64 GiB host tier raises the prefix-cached tokens and lowers mean TTFT;
    the same tokens are reused in both simulators."""

    from kvsim.methods import make_method
    from kvsim.sim.config import SimConfig
    from kvsim.sim.kv_tiers import KVOffload
    from kvsim.sim.reference import simulate_reference
    from kvsim.sim.replica import simulate
    from test_sim_support import a100_llama, util_for_blocks

    dep = a100_llama()
    m = make_method("full", dep)
    tr = load_trace("synthetic-scbench:n=64,turns=4,contexts=8,context=8192,query=64,output=32,gap=5,rate=1,seed=1")
    base = SimConfig()
    base = base.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 1500, base)})
    off = simulate(dep, m, tr, base)
    on_cfg = base.model_copy(update={"kv_offload": KVOffload(host_bytes=64 * 2**30)})
    on = simulate(dep, m, tr, on_cfg)
    assert on.summary["kv_offload"]["host"]["hit_entries"] > 0
    assert on.summary["cached_prompt_tokens"] > off.summary["cached_prompt_tokens"]
    assert on.summary["ttft_s"]["mean"] < off.summary["ttft_s"]["mean"]
    ref = simulate_reference(dep, m, tr, on_cfg)
    assert np.array_equal(on.records.cached_tokens, ref.cached_tokens)
    assert np.allclose(on.records.first_token_s, ref.first_token_s, rtol=1e-9, atol=0)
