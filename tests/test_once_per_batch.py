"""Decode fields paid once per batch (KVMethod.once_per_batch_decode): InfLLM's block-score launches
and PCIe round trip per layer. The fast tables sum them and cap them at the per-sequence constant;
this must price every batch exactly as calling the method does."""

import numpy as np
import pytest
from synthetic import llama31_8b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.methods import make_method
from kvsim.pricing.step import StepModel
from kvsim.sim.fast.pricer import StepPricer


def _step(name: str = "infllm") -> StepModel:
    dep = Deployment(system=synthetic_system(), model=llama31_8b(), tp=1)
    return StepModel(dep, make_method(name, dep))


def _field(cost, name: str, field: str) -> float:
    return float(sum(np.sum(getattr(p, field)) for p in cost.parts if p.name == name))


def test_infllm_pays_block_scores_once_per_batch() -> None:
    """InfLLM (n_init 128 + n_local 4096 = 4224 local tokens): sequences at 5,000 and 6,000 tokens have
    blocks beyond the local window, one at 100 does not. The batch launches the block scoring
    2 x 32 layers = 64 times and makes 32 PCIe round trips, as does either long sequence alone."""
    m = _step().method
    batch = m.decode_cost(np.array([5000.0, 6000.0, 100.0]))
    assert _field(batch, "infllm_block_scores", "launches") == 64.0
    assert _field(batch, "infllm_fetch", "pcie_round_trips") == 32.0
    alone = m.decode_cost(np.array([5000.0]))
    assert _field(alone, "infllm_block_scores", "launches") == 64.0
    assert _field(m.decode_cost(np.array([100.0, 200.0])), "infllm_block_scores", "launches") == 0.0


def test_fast_tables_cap_the_once_columns() -> None:
    step = _step()
    pricer = StepPricer(step, 8192, 8)
    assert pricer.decode_mode == "table"
    caps = dict(pricer.layout.once)
    assert sorted(caps.values()) == [32.0, 64.0]
    rng = np.random.default_rng(7)
    for _ in range(20):
        B, k = int(rng.integers(1, 9)), int(rng.integers(1, 40))
        ctx = rng.integers(0, 8192 - k, size=B)
        got = pricer.decode_run(ctx, k).dt
        steps = (ctx[None, :] + np.arange(k)[:, None]).astype(np.float64)  # [k, B]
        want = np.array([step.time_s(decode_ctx=row) for row in steps])
        np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("left", [[1, 5, 9], [9, 9, 2]])
def test_fast_tables_cap_runs_with_finishing_sequences(left) -> None:
    step = _step()
    pricer = StepPricer(step, 8192, 8)
    ctx = np.array([4300, 100, 7000])
    k = 9
    got = pricer.decode_run(ctx, k, left=np.array(left)).dt
    for j in range(k):
        alive = [c + j for c, n in zip(ctx.tolist(), left) if j < n]
        assert got[j] == pytest.approx(step.time_s(decode_ctx=np.array(alive, dtype=np.float64)), rel=1e-9)


def test_a_wrong_once_declaration_falls_back_to_calling(monkeypatch) -> None:
    """A declared field that is not 0-or-one-constant per sequence is refused at table build."""
    from kvsim.methods.infllm import InfLLM

    monkeypatch.setattr(InfLLM, "once_per_batch_decode", (("infllm_block_scores", "flops"),))
    assert StepPricer(_step(), 8192, 8).decode_mode == "call"
