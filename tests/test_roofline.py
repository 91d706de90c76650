"""Roofline: the only conversion from work to seconds (hand-computed on the synthetic system)."""

from dataclasses import replace

import numpy as np
import pytest
from synthetic import synthetic_system

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline
from kvsim.methods import REGISTRY


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


# ---------------------------------------------------------------------- the compiled rule
OPS = ("gemm", "attn_decode", "attn_prefill", "elementwise", "cpu_attn", "pcie", "step")
DEVICE_OF = {"cpu_attn": "cpu", "pcie": "pcie", "step": "host"}
FIELDS = ("flops", "hbm_bytes", "cpu_flops", "dram_bytes", "pcie_bytes", "pcie_round_trips", "link_bytes",
          "launches")
SCALE = {"flops": 1e12, "hbm_bytes": 1e10, "cpu_flops": 1e10, "dram_bytes": 1e9, "pcie_bytes": 1e8,
         "pcie_round_trips": 50, "link_bytes": 1e9, "launches": 100}


def _random_cost(rng, k: int) -> Cost:
    """3-7 parts, random ops/devices/dtypes, some in overlap groups; each field zero, a scalar or a [k] array."""
    parts = []
    for i in range(int(rng.integers(3, 8))):
        op = OPS[int(rng.integers(len(OPS)))]
        amounts = {}
        for f in FIELDS:
            kind = rng.integers(4)
            if kind == 1:
                amounts[f] = float(rng.random() * SCALE[f])
            elif kind >= 2:
                amounts[f] = rng.random(k) * SCALE[f] * (rng.random(k) > 0.2)  # some zeros
        overlap = [None, None, "x", "y"][int(rng.integers(4))]
        parts.append(Part(f"p{i}", op, device=DEVICE_OF.get(op, "gpu"), dtype=["bf16", "fp8", "int4"][i % 3],
                          overlap=overlap, **amounts))
    return Cost(tuple(parts))


def _amounts(cost: Cost, columns, k: int) -> np.ndarray:
    return np.stack([np.broadcast_to(np.asarray(getattr(cost.parts[i], f), dtype=float), (k,)) for i, f in columns],
                    axis=-1)  # [k, ncol]


def test_compiled_equals_call_on_random_costs(rl):
    """CompiledRoofline.seconds on [k, ncol] work equals Roofline(cost).total_s, in any column order."""
    rng = np.random.default_rng(7)
    for trial in range(200):
        k = 5
        cost = _random_cost(rng, k)
        want = np.broadcast_to(rl(cost).total_s, (k,))
        columns = [(i, f) for i, p in enumerate(cost.parts) for f in FIELDS if np.any(getattr(p, f))]
        if trial % 2:  # the caller chooses the layout; unused (all-zero) columns may be listed too
            columns = [columns[j] for j in rng.permutation(len(columns))] + [(0, f) for f in FIELDS
                                                                              if (0, f) not in columns][:1]
        compiled = rl.compile(cost.parts, columns)
        np.testing.assert_allclose(compiled.seconds(_amounts(cost, columns, k)), want, rtol=1e-12, atol=0)
        for j in range(k):  # one row at a time ([ncol] -> scalar)
            assert compiled.seconds(_amounts(cost, columns, k)[j]) == pytest.approx(want[j], rel=1e-12)


@pytest.mark.parametrize("tiles_in_body", [False, True])
def test_column_plan_is_bit_identical_to_the_stages(tiles_in_body):
    """The hot path (roofline_plan.ColumnPlan) gives the three stages' seconds bit for bit, with
    p-norms (of two resources, and of more with several parts), wave floors and tile costs on
    (tiles as an overhead, or in the body with the streams: ``tiles_in_body``), on [k, ncol]
    work, one row, and [1, ncol] (overlap groups: one row)."""
    system = synthetic_system()
    eff = system.eff
    refined = dict(attn_decode=eff.attn_decode.model_copy(update=dict(blend=1.3, wave_tiles_per_sm=2.0, tile_s=1e-7,
                                                                       tiles_in_body=tiles_in_body)),
                   gemm=eff.gemm.model_copy(update=dict(blend=1.8)), cpu_attn=eff.cpu_attn.model_copy(update=dict(blend=2.5)))
    rl = Roofline(replace(system, eff=eff.model_copy(update=refined)))
    rng = np.random.default_rng(13)
    fields = FIELDS + ("tiles",)
    planned = 0
    for trial in range(300):
        k = int(rng.choice([2, 5, 40]))
        parts = []
        for i in range(int(rng.integers(1, 6))):
            op = ("attn_decode", "gemm", "cpu_attn", "pcie", "elementwise")[int(rng.integers(5))]
            busy = rng.random(k) > 0.2  # steps in which the part runs (an idle part has no work at all:
            # a tiled op never has FLOPs without tiles, which the wave floor assumes)
            amounts = {f: rng.random(k) * SCALE.get(f, 1e4) * busy for f in fields if rng.random() < 0.6}
            overlap = [None, None, None, "x", "y"][int(rng.integers(5))] if trial % 2 else None
            parts.append(Part(f"p{i}", op, device=DEVICE_OF.get(op, "gpu"), overlap=overlap, **amounts))
        columns = [(i, f) for i, p in enumerate(parts) for f in fields if np.any(getattr(p, f))]
        compiled = rl.compile(parts, columns)
        if compiled._plan is None and compiled._lone_blend is None:
            continue
        planned += 1
        work = _amounts(Cost(tuple(parts)), columns, k)
        stages = compiled.total_seconds(compiled.part_seconds(compiled.resource_seconds(work), work))
        np.testing.assert_array_equal(compiled.seconds(work), stages)
        np.testing.assert_array_equal(compiled.seconds(work[:1]), stages[:1])
        # column-first memory (what the fast layer's unfold passes) and more leading axes: same bits
        np.testing.assert_array_equal(compiled.seconds(np.asfortranarray(work)), stages)
        np.testing.assert_array_equal(compiled.seconds(np.stack([work, work[::-1]])), np.stack([stages, stages[::-1]]))
        assert compiled.seconds(work[1]) == stages[1]
        assert Roofline.seconds(rl, Cost(tuple(Part(p.name, p.op, device=p.device, overlap=p.overlap,
                                                     **{f: float(getattr(p, f)[1]) for f in fields if np.any(getattr(p, f))})
                                                for p in parts))) == pytest.approx(stages[1], rel=1e-12)
    assert planned > 40


def test_blended_parts_priced_together_equal_each_alone():
    """Parts with the same p-norm (attention decode with tiles in the body, twice) are blended on
    gathered columns at once: each part's seconds equal its template alone, bit for bit."""
    system = synthetic_system()
    eff = system.eff
    refined = dict(attn_decode=eff.attn_decode.model_copy(update=dict(blend=1.7, wave_tiles_per_sm=2.0, tiles_in_body=True)))
    rl = Roofline(replace(system, eff=eff.model_copy(update=refined)))
    rng = np.random.default_rng(3)
    fields = ("flops", "hbm_bytes", "launches", "tiles")
    for trial in range(50):
        k = int(rng.choice([1, 3, 40]))
        parts = [Part(f"a{i}", "attn_decode", **{f: rng.random(k) * SCALE.get(f, 1e4) + 1.0 for f in fields})
                 for i in range(int(rng.integers(2, 5)))]
        columns = [(i, f) for i in range(len(parts)) for f in fields]
        compiled = rl.compile(parts, columns)
        assert len(compiled._blend_groups) == 1
        work = _amounts(Cost(tuple(parts)), columns, k)
        together = compiled.part_seconds(compiled.resource_seconds(work), work)
        for i, p in enumerate(parts):
            alone = rl.compile([p], [(0, f) for f in fields])
            own = work[:, 4 * i:4 * i + 4]
            np.testing.assert_array_equal(together[:, i], alone.part_seconds(alone.resource_seconds(own), own)[:, 0])


def test_seconds_equals_call_total(rl):
    """Roofline.seconds(cost) (the hot path, no per-part breakdown) is exactly Roofline(cost).total_s."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        cost = _random_cost(rng, 1 + trial % 4)
        np.testing.assert_array_equal(rl.seconds(cost), rl(cost).total_s)
    assert rl.seconds(Cost(())) == 0.0


def test_call_keeps_per_part_times(rl):
    """Roofline.__call__ (through the compiled rule) reports each part's seconds, resources and bound."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        cost = _random_cost(rng, 4)
        t = rl(cost)
        for p, pt in zip(cost.parts, t.parts):
            body = [v for r, v in pt.resource_s.items() if r != "overhead"]
            expect = (np.maximum.reduce(np.broadcast_arrays(*body)) if body else 0.0) + pt.resource_s.get("overhead", 0.0)
            np.testing.assert_allclose(pt.seconds, expect, rtol=1e-12, atol=0)
            assert (pt.name, pt.op, pt.device) == (p.name, p.op, p.device)
            assert pt.bound == (max(pt.resource_s, key=lambda r: float(np.mean(pt.resource_s[r])))
                                if pt.resource_s else "none")


def test_compiled_hand_computed_overlap_group(rl):
    """Serial part + an overlap group over three devices, two steps of work, checked by hand."""
    parts = (
        Part("mlp", "gemm"),                                        # serial
        Part("attn", "attn_prefill", overlap="x"),                  # GPU, in group x
        Part("tables", "cpu_attn", device="cpu", overlap="x"),      # CPU, in group x
        Part("offload", "pcie", device="pcie", overlap="x"),        # PCIe, in group x
    )
    columns = [(0, "flops"), (0, "hbm_bytes"), (0, "launches"), (1, "flops"), (2, "cpu_flops"), (2, "launches"),
               (3, "pcie_bytes"), (3, "pcie_round_trips")]
    work = np.array([
        [1e12, 1e9, 2, 1.5e12, 5e9, 1, 50e6, 30],
        [1e12, 1e9, 2, 0.0, 5e9, 1, 50e6, 30],
    ])
    # mlp:     max(1e12 / (100e12 * 0.5) = 20 ms, 1e9 / (1e12 * 0.5) = 2 ms) + 2 * 10 us      = 20.02 ms
    # attn:    1.5e12 / (100e12 * 0.5)                                                          = 30 ms (row 0), 0 (row 1)
    # tables:  5e9 / (1e12 * 0.5) + 1 * 10 us                                                   = 10.01 ms
    # offload: 50e6 / (10e9 * 0.5) + 30 * (2 * 5 us + 10 us)                                   = 10.6 ms
    # row 0: 20.02 + max(gpu 30, cpu 10.01, pcie 10.6) = 50.02 ms; row 1: 20.02 + 10.6 = 30.62 ms
    got = rl.compile(parts, columns).seconds(work)
    np.testing.assert_allclose(got, [0.05002, 0.03062], rtol=1e-12)
    cost = Cost(tuple(replace(p, **{f: work[0, n] for n, (i, f) in enumerate(columns) if i == j})
                      for j, p in enumerate(parts)))
    assert rl(cost).total_s == pytest.approx(0.05002, rel=1e-12)


def test_separable(rl):
    a = (Part("mlp", "gemm"), Part("attn", "attn_decode"))
    assert Roofline.separable(a, (Part("q", "elementwise"),))
    assert not Roofline.separable(a, (Part("mlp", "gemm", flops=1.0),))  # same identity: amounts merge
    assert not Roofline.separable((Part("u", "gemm", overlap="x"),), (Part("v", "cpu_attn", device="cpu", overlap="x"),))


# ---------------------------------------------------------------------- the fast pricer prices through it
PRICER_METHODS = tuple(m for m in REGISTRY if m != "mla")  # mla: needs an MLA model (the contract test covers it)


@pytest.mark.parametrize("name", PRICER_METHODS)
def test_step_pricer_equals_step_model(name):
    """StepPricer step times (decode, prefill, mixed; decode runs) equal StepModel.time_s to 1e-9."""
    from synthetic import llama31_8b

    from kvsim.costmodel.deployment import Deployment
    from kvsim.methods import make_method
    from kvsim.pricing.step import StepModel
    from kvsim.sim.fast.pricer import DecodeRunPrices, StepPricer

    dep = Deployment(system=synthetic_system(), model=llama31_8b(), tp=1)
    step = StepModel(dep, make_method(name, dep))
    rng = np.random.default_rng(11)
    n = 60
    prompt, output = rng.integers(20, 3000, n), rng.integers(2, 600, n)
    pricer = StepPricer(step, 4096, 32, prompt=prompt, output=output)
    m = step.method  # the pricing mode follows the method's declared traits
    want_mode = "call" if not m.additive_decode else ("rows" if m.prompt_aware else "table")
    assert pricer.mode == "fast" and pricer.decode_mode == want_mode
    rows = pricer.decode_mode == "rows"
    for trial in range(30):
        b = int(rng.integers(0, 9)) if trial % 3 else 0
        rid = rng.choice(n, b, replace=False)
        for i in rid:
            pricer.ensure_rows(int(i))
        ctx = prompt[rid] - 1 + (rng.random(b) * (output[rid] - 3)).astype(np.int64)  # [b]
        chunks = int(rng.integers(0 if b else 1, 3))  # decode-only, prefill-only and mixed steps
        new = tuple(int(x) for x in rng.integers(1, 600, chunks))
        cached = tuple(int(x) for x in rng.integers(0, 600, chunks))
        want = step.time_s(decode_ctx=ctx.astype(float), prefill_new=np.array(new, dtype=float),
                           prefill_cached=np.array(cached, dtype=float), n_sampled_prefill=chunks,
                           decode_prompt=prompt[rid].astype(float))
        got = pricer.step_time(ctx, new, cached, chunks, decode_prompt=prompt[rid], rid=rid if rows else None)
        assert got == pytest.approx(float(want), rel=1e-9)
        if b:
            k = 2
            run = pricer.decode_run(ctx, k, prompt=prompt[rid], rid=rid if rows else None)
            assert isinstance(run, DecodeRunPrices) and run.dt.shape == (k,) and run.batch_sizes is None
            contexts = ctx[None, :] + np.arange(k)[:, None]  # [k, b]
            want_run = step.time_s(decode_ctx=contexts.astype(float),
                                   decode_prompt=np.broadcast_to(prompt[rid], contexts.shape).astype(float))
            np.testing.assert_allclose(run.dt, want_run, rtol=1e-9)
            if b > 1 and pricer.masked_ok:  # (decode_run's contract: at least one sequence in every step)
                left = np.full(b, k)
                left[0] = 1  # the first sequence finishes after step 0
                masked = pricer.decode_run(ctx, k, left=left, prompt=prompt[rid], rid=rid if rows else None)
                assert masked.batch_sizes.tolist() == [b, b - 1]
                tail = step.time_s(decode_ctx=contexts[1, 1:].astype(float), decode_prompt=prompt[rid][1:].astype(float))
                assert masked.dt[1] == pytest.approx(float(tail), rel=1e-9)


def test_tiles_in_body_overlap_the_stream():
    """tiles_in_body: the tiles' time joins the max (or p-norm) of the resource times instead of adding."""
    s = synthetic_system()  # HBM 1e12 B/s, memory 0.5
    part = Part("a", "attn_decode", hbm_bytes=1e6, launches=1.0, tiles=100.0)

    def secs(**eff):
        e = s.eff.with_overrides({"attn_decode": {"overhead_s": 0.0, "tile_s": 1e-8, **eff}})
        return Roofline(s.with_efficiencies(e)).seconds(Cost((part,)))

    # HBM 1e6 / (1e12 * 0.5) = 2 us; tiles 100 * 10 ns = 1 us
    assert secs() == pytest.approx(3e-6)  # added: 2 + 1
    assert secs(tiles_in_body=True) == pytest.approx(2e-6)  # max(2, 1)
    assert secs(tiles_in_body=True, blend=2.0) == pytest.approx(5 ** 0.5 * 1e-6)  # sqrt(2^2 + 1^2)
    many = replace(part, hbm_bytes=np.array([1e6, 1e5]), tiles=np.array([100.0, 100.0]))
    e = s.eff.with_overrides({"attn_decode": {"overhead_s": 0.0, "tile_s": 1e-8, "tiles_in_body": True}})
    # vectorized: max(2, 1) = 2 us; max(0.2, 1) = 1 us
    assert Roofline(s.with_efficiencies(e)).seconds(Cost((many,))) == pytest.approx([2e-6, 1e-6])


def test_pnorm_of_more_than_two_resources_by_hand():
    """(sum t^p)^(1/p) of three resources: computed directly for p <= DIRECT_P_MAX, normalized by
    the largest term above it; the roofline's stages call the same function on their columns."""
    from kvsim.costmodel.roofline_plan import DIRECT_P_MAX, pnorm_of_list, pnorm_rows

    t = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 0.0]])
    assert 2.0 <= DIRECT_P_MAX < 10.0
    # p = 2: sqrt(9 + 16 + 144) = sqrt(169) = 13 (direct); all zero -> 0
    assert pnorm_rows(t.copy(), 2.0, 0.5).tolist() == pytest.approx([13.0, 0.0], rel=1e-15)
    # p = 10 (normalized): 12 * (1 + (4/12)^10 + (3/12)^10)^0.1 = 12 * (1 + 1.6935e-5 + 9.537e-7)^0.1
    #   = 12 * (1 + 1.7889e-6) = 12.0000215
    assert pnorm_rows(t.copy(), 10.0, 0.1)[0] == pytest.approx(12.0000215, rel=1e-8)
    assert pnorm_rows(t.copy(), 10.0, 0.1)[1] == 0.0
    # the stages' list form stacks its arrays and calls the same function: bit-identical
    cols = [t[:, 0], t[:, 1], t[:, 2]]
    for p in (1.7, 6.576, 10.0):
        assert np.array_equal(pnorm_of_list(cols, p), pnorm_rows(t.copy(), p, 1.0 / p))
