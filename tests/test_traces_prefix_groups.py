"""Shared prompt prefixes named by a generic trace's columns (kvsim.traces.prefix_groups)."""

from __future__ import annotations

import pytest

import kvsim
from kvsim.errors import TraceError
from kvsim.traces import load_trace
from kvsim.traces.prefix_groups import prefix_group_blocks
from kvsim.traces.tabular import parse_columns

COLS = "arrival=ts,prompt=in,output=out,prefix=sys,prefix_tokens=sys_len"


def test_blocks_of_each_group_by_hand():
    """16-token blocks: 8,000 shared tokens are 500 whole blocks, 40 are 2 (the 8 left share a block with the
    row's own tokens, so they get no id), 8,010 are 500; groups a and b never share an id; no group: no ids."""
    blocks, stats = prefix_group_blocks(["a", "a", None, "b", "a"], [8000, 40, 0, 32, 8010])
    assert [len(b) for b in blocks] == [500, 2, 0, 2, 500]
    assert blocks[1] == blocks[0][:2] and blocks[4] == blocks[0]
    assert not set(blocks[3]) & set(blocks[0])
    assert stats == {"groups": 2, "rows": 4, "shared_blocks": 502, "block_tokens": 16}


def test_requests_sharing_a_system_prompt_hit_it_in_both_simulators(tmp_path):
    """Rows 1, 2 and 4 share 8,000 tokens (500 blocks), row 3 nothing. Row 1 computes them; row 2, admitted
    behind it in the same step, and row 4, 5 s later, each find 500 x 16 = 8,000 tokens (at most
    (8100 - 1) // 16 = 506 blocks are looked up, 500 are named): 16,000 cached tokens."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.config import SimConfig
    from kvsim.sim.reference import simulate_reference

    p = tmp_path / "t.csv"
    p.write_text("ts,in,out,sys,sys_len\n0,8050,10,a,8000\n0,8100,10,a,8000\n0,6000,10,,\n5,8200,10,a,8000\n")
    tr = load_trace(str(p), columns=COLS)
    assert tr.prefix_block_tokens == 16 and [len(b) for b in tr.prefix_blocks] == [500, 500, 0, 500]
    r = kvsim.simulate(hw="a100", model="llama-3.1-8b", method="full", trace=tr)
    assert r.summary["cached_prompt_tokens"] == 16000
    assert r.requests["cached_tokens"].tolist() == [0, 8000, 0, 8000]
    dep = build_deployment("a100", "llama-3.1-8b")
    ref = simulate_reference(dep, make_method("full", dep), tr, SimConfig())
    assert ref.cached_tokens.tolist() == [0, 8000, 0, 8000]
    off = kvsim.simulate(hw="a100", model="llama-3.1-8b", method="full", trace=tr, enable_prefix_caching=False)
    assert off.summary["cached_prompt_tokens"] == 0


def test_column_errors_and_bad_rows(tmp_path):
    with pytest.raises(TraceError, match="prefix=COLUMN .* and prefix_tokens=COLUMN .* go together"):
        parse_columns("prompt=in,output=out,prefix=sys")
    with pytest.raises(TraceError, match="session and prefix cannot both"):
        parse_columns("prompt=in,output=out,prefix=sys,prefix_tokens=n,session=s")
    p = tmp_path / "t.csv"
    p.write_text("ts,in,out,sys,sys_len\n0,100,10,a,8000\n1,100,10,a,\n2,100,10,a,50\n")
    tr = load_trace(str(p), columns=COLS)
    assert len(tr) == 1 and tr.meta["bad_rows"] == {"missing_field": 1, "bad_token_count": 1}
