"""Roofline: the only conversion from work to seconds (hand-computed on the synthetic system)."""

import numpy as np
import pytest
from synthetic import synthetic_system

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline


@pytest.fixture
def rl():
    return Roofline(synthetic_system())


def test_compute_bound_part(rl):
    """A GEMM with 1e12 FLOPs and 1e9 bytes is compute bound."""
    t = rl(Cost.of(Part("g", "gemm", flops=1e12, hbm_bytes=1e9, launches=1)))
    # compute 1e12 / (100e12 * 0.5) = 20 ms; memory 1e9 / (1e12 * 0.5) = 2 ms; + 10 us launch
    assert t.total_s == pytest.approx(0.020 + 10e-6, rel=1e-12)
    assert t.parts[0].bound == "gpu_compute"


def test_memory_bound_part(rl):
    """Decode attention reading 10 GB is memory bound."""
    t = rl(Cost.of(Part("a", "attn_decode", flops=1e9, hbm_bytes=10e9)))
    # 10e9 / (1e12 * 0.5) = 20 ms vs 1e9 / 50e12 = 20 us
    assert t.total_s == pytest.approx(0.020, rel=1e-12)
    assert t.parts[0].bound == "hbm"


def test_fp32_fallback_for_missing_dtype(rl):
    """A dtype without a peak (int4 math) runs at the fp32 rate."""
    t = rl(Cost.of(Part("g", "gemm", dtype="int4", flops=1e12)))
    # 1e12 / (10e12 * 0.5) = 0.2 s
    assert t.total_s == pytest.approx(0.2, rel=1e-12)


def test_serial_parts_add_and_overlap_takes_max(rl):
    """Untagged parts add; parts sharing an overlap tag take the slowest device."""
    gpu = Part("p", "attn_prefill", flops=1e12, overlap="x")  # 20 ms on GPU
    cpu = Part("t", "cpu_attn", device="cpu", cpu_flops=5e9, overlap="x")  # 5e9/(1e12*0.5) = 10 ms on CPU
    serial = Part("s", "gemm", flops=50e9)  # 50e9 / 50e12 = 1 ms
    t = rl(Cost.of(gpu, cpu, serial))
    assert t.total_s == pytest.approx(0.020 + 0.001, rel=1e-12)


def test_pcie_round_trips(rl):
    """PCIe bytes at link bandwidth plus (2 * latency + overhead) per round trip."""
    t = rl(Cost.of(Part("x", "pcie", device="pcie", pcie_bytes=50e6, pcie_round_trips=30)))
    # 50e6 / (10e9 * 0.5) = 10 ms; 30 * (2 * 5 us + 10 us) = 600 us
    assert t.total_s == pytest.approx(0.010 + 600e-6, rel=1e-12)


def test_vectorized_parts_match_scalar(rl):
    """Array-valued work gives the same seconds as pricing each element alone."""
    hbm = np.array([1e9, 5e9, 20e9])
    vec = rl(Cost.of(Part("a", "attn_decode", flops=2e12, hbm_bytes=hbm, launches=32))).total_s
    one = [rl(Cost.of(Part("a", "attn_decode", flops=2e12, hbm_bytes=h, launches=32))).total_s for h in hbm]
    np.testing.assert_allclose(vec, one, rtol=1e-12)


def test_cost_addition_merges_same_parts():
    """Cost + Cost merges parts of the same identity and keeps others."""
    a = Cost.of(Part("mlp", "gemm", flops=1.0, hbm_bytes=2.0))
    b = Cost.of(Part("mlp", "gemm", flops=3.0), Part("attn", "attn_decode", hbm_bytes=5.0))
    c = a + b
    assert c.by_name("mlp").flops == 4.0 and c.by_name("mlp").hbm_bytes == 2.0
    assert c.total("hbm_bytes") == 7.0
