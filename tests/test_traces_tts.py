"""Test-time-scaling traces: best-of-N, long CoT, ETS-style tree search (kvsim.traces.tts)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kvsim
from kvsim.errors import TraceError
from kvsim.traces import load_trace
from kvsim.traces.tts import kv_sharing, lognormal_lengths, tree_children


def test_best_of_n_groups_share_one_prompt():
    """n=20, N=8: 3 tasks (8, 8, 4 samples); a task's samples arrive together with the same ids."""
    tr = load_trace("synthetic-best-of-n:n=20,N=8,prompt=40,output=100,block=16")
    assert len(tr) == 20 and tr.meta["tasks"] == 3 and tr.prefix_block_tokens == 16
    # ceil(40 / 16) = 3 ids per prompt; task k uses 3k, 3k+1, 3k+2
    assert tr.prefix_blocks[0] == (0, 1, 2) and tr.prefix_blocks[7] == (0, 1, 2)
    assert tr.prefix_blocks[8] == (3, 4, 5) and tr.prefix_blocks[19] == (6, 7, 8)
    assert np.all(tr.arrival_s[:8] == 0.0) and np.all(tr.arrival_s[8:16] == tr.arrival_s[8])
    assert tr.arrival_s[8] > 0 and set(tr.output_tokens.tolist()) == {100}


def test_cot_lengths_fixed_and_capped():
    """output_cv=0 gives every request the mean; the budget max_output caps it."""
    tr = load_trace("synthetic-cot:n=5,output=5000,output_cv=0,max_output=4000")
    assert tr.output_tokens.tolist() == [4000] * 5
    assert tr.meta["tasks"] == 5 and tr.prefix_blocks[0] != tr.prefix_blocks[1]


def test_lognormal_mean_and_cv():
    """Lognormal lengths keep the requested mean (1000) and CV (0.5) within sampling error."""
    x = lognormal_lengths(200_000, 1000.0, 0.5, 10**6, np.random.default_rng(1))
    # std of the mean = 0.5 * 1000 / sqrt(2e5) = 1.1 tokens -> 1% is > 9 sigma
    assert x.mean() == pytest.approx(1000.0, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.02)


def test_tree_children_even_split():
    """16 children over 5 survivors: 4, 3, 3, 3, 3 (16 = 5*3 + 1)."""
    assert tree_children(16, 5) == [4, 3, 3, 3, 3]
    assert tree_children(4, 2) == [2, 2]


def test_tree_blocks_shared_along_paths():
    """width 4, depth 3, retain 0.5, prompt 40, step 20, 16-token blocks: one task's ids by hand. A node's
    ids cover its prompt and its step; its children share the full blocks of that stream."""
    tr = load_trace("synthetic-tree:n=12,width=4,depth=3,retain=0.5,step=20,prompt=40,block=16,level_s=2")
    b = tr.prefix_blocks
    assert tr.prompt_tokens.tolist() == [40] * 4 + [60] * 4 + [80] * 4  # P + d * step
    assert tr.arrival_s.tolist() == [0.0] * 4 + [2.0] * 4 + [4.0] * 4  # d * level_s
    # root: 40 // 16 = 2 full blocks (0, 1) shared; a level-0 node covers ceil(60/16) = 4 blocks: 2 own
    assert b[:4] == ((0, 1, 2, 3), (0, 1, 4, 5), (0, 1, 6, 7), (0, 1, 8, 9))
    # keep = round(0.5 * 4) = 2 parents (nodes 0, 1), 2 children each; a child's prompt (60) is its
    # parent's stream: 60 // 16 = 3 full blocks shared, ceil(80/16) = 5 in all, 2 own
    assert b[4:8] == ((0, 1, 2, 10, 11), (0, 1, 2, 12, 13), (0, 1, 4, 14, 15), (0, 1, 4, 16, 17))
    # level 2: parents (0,1,2,10,11) and (0,1,2,12,13); 80 // 16 = 5 shared, ceil(100/16) = 7 in all
    assert b[8:12] == ((0, 1, 2, 10, 11, 18, 19), (0, 1, 2, 10, 11, 20, 21), (0, 1, 2, 12, 13, 22, 23),
                       (0, 1, 2, 12, 13, 24, 25))
    s = kv_sharing(tr.prompt_tokens, b, 16)
    # prompt ids only, ceil(P / 16): 4 x 3 + 4 x 4 + 4 x 5 = 48 named; distinct: level 0 (0, 1, 2, 4, 6, 8),
    # level 1 adds 10, 12, 14, 16, level 2 adds 11, 13: 12
    assert (s["total_blocks"], s["distinct_blocks"]) == (48, 12)


def test_retain_one_keeps_every_node():
    """retain=1: every node has one child, so paths never merge (width distinct tails per level)."""
    tr = load_trace("synthetic-tree:n=6,width=2,depth=3,retain=1,step=16,prompt=16,block=16")
    # root (0,); level 0 streams of 32 tokens: (0,1), (0,2); level 1 (48): +3, +4; level 2 (64): +5, +6
    assert tr.prefix_blocks == ((0, 1), (0, 2), (0, 1, 3), (0, 2, 4), (0, 1, 3, 5), (0, 2, 4, 6))


@pytest.mark.parametrize("spec,word", [
    ("synthetic-tree:retain=0", "retain"),
    ("synthetic-best-of-n:N=0", "N"),
    ("synthetic-cot:output_cv=-1", "output_cv"),
    ("synthetic-tree:fanout=3", "unknown option"),
])
def test_bad_options_are_trace_errors(spec, word):
    """Bad inline options are one TraceError naming the option."""
    with pytest.raises(TraceError, match=word):
        load_trace(spec)


def test_cli_bad_option_one_error_line():
    """`kvsim trace info` with a bad tree option exits 1 with one 'error:' line."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "kvsim", "trace", "info", "synthetic-tree:width=0"], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "width" in lines[0]


def test_best_of_n_prefix_cache_in_simulator():
    """N=4 samples of a 4,096-token prompt, 8,192-token step budget: the first prefills it, and its
    blocks are cached when that prefill is scheduled (vLLM v1 allocate_slots), so the other three,
    admitted behind it in the same step (4,096 + 3 x 16 tokens fit the budget), hit the cache for
    (4096 - 1) // 16 = 255 blocks = 4,080 tokens each."""
    tr = load_trace("synthetic-best-of-n:n=8,N=4,prompt=4096,output=8,rate=0.01")  # 2 tasks ~100 s apart
    r = kvsim.simulate(hw="h100", model="qwen3-8b", method="full", trace=tr, max_num_batched_tokens=8192)
    assert r.summary["cached_prompt_tokens"] == 2 * 3 * 4080  # 2 tasks x 3 hits x 4,080


def test_too_many_block_ids_is_an_error():
    """A trace that would hold over 10M block ids is refused: 1000 tasks x ceil(1e6 / 16) = 62.5M ids."""
    with pytest.raises(TraceError, match="block ids"):
        load_trace("synthetic-cot:n=1000,prompt=1000000")
    assert len(load_trace("synthetic-cot:n=1000,prompt=1000000,block=1024")) == 1000  # 1000 x 977 ids


def test_tree_children_hit_the_root_prompt_in_simulator():
    """width 2, depth 2, retain 0.5, prompt 4,096, step 8: level 0's first node prefills the root and the
    second, admitted behind it in the same step, hits its (4096 - 1) // 16 = 255 blocks = 4,080 tokens
    (cached when the first's prefill was scheduled); level 1's two children (4,104 tokens) each hit the
    root's 4096 // 16 = 256 blocks = 4,096 tokens and compute their 8-token tail: 4,080 + 2 x 4,096 =
    12,272 cached tokens."""
    tr = load_trace("synthetic-tree:n=4,width=2,depth=2,retain=0.5,prompt=4096,step=8,level_s=50")
    r = kvsim.simulate(hw="h100", model="qwen3-8b", method="full", trace=tr, max_num_batched_tokens=8192)
    assert r.summary["cached_prompt_tokens"] == 12272
    assert r.requests["cached_tokens"].tolist() == [0, 4080, 4096, 4096]


def test_tree_children_hit_the_parents_generated_step_in_simulator():
    """width 2, depth 2, retain 0.5, prompt 4,096, step 32: the kept parent (node 0) finishes with 4,096 +
    32 - 1 = 4,127 tokens of KV, 4127 // 16 = 257 full blocks: the 256 of its prompt and 1 of its step,
    cached as it finishes. Its two children (prompt 4,128 = the parent's stream, arriving 50 s later) look
    up (4128 - 1) // 16 = 257 blocks and find all: 257 x 16 = 4,112 tokens each (4,096 with prompt blocks
    only); with level 0's second node's 4,080 (as above): 4,080 + 2 x 4,112 = 12,304."""
    tr = load_trace("synthetic-tree:n=4,width=2,depth=2,retain=0.5,prompt=4096,step=32,level_s=50")
    r = kvsim.simulate(hw="h100", model="qwen3-8b", method="full", trace=tr, max_num_batched_tokens=8192)
    assert r.requests["cached_tokens"].tolist() == [0, 4080, 4112, 4112]
    assert r.summary["cached_prompt_tokens"] == 12304


def test_best_of_n_fork_shares_the_prompt_with_every_sample():
    """fork_s=5: samples 2..4 arrive 5 s after the first, once its prompt is cached: 3 x 4,080 tokens hit."""
    tr = load_trace("synthetic-best-of-n:n=4,N=4,prompt=4096,output=8,fork_s=5")
    assert tr.arrival_s.tolist() == [0.0, 5.0, 5.0, 5.0]
    r = kvsim.simulate(hw="h100", model="qwen3-8b", method="full", trace=tr, max_num_batched_tokens=8192)
    assert r.summary["cached_prompt_tokens"] == 3 * 4080  # (4096 - 1) // 16 = 255 blocks of 16
