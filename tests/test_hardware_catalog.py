"""The wider GPU catalog (issue 11): datasheet arithmetic of each new GPU, fp8/fp4 weight dtypes where
a GPU has those tensor cores, PCIe-only and full-mesh collectives."""

from __future__ import annotations

import pytest

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.deployment import Deployment, build_deployment
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import linear_cost
from kvsim.errors import ConfigError
from kvsim.hardware import catalog, default_efficiencies, load_system
from kvsim.models import load_model

MIB = 2**20


def gpu(name: str):
    return catalog("gpu")[name]


def test_gb200_is_the_nvl72_rack_over_72() -> None:
    """GB200 per GPU = NVL72 rack / 72, dense = sparse / 2: BF16 360 PF -> 2.5 PF, FP8 720 -> 5 PF,
    FP4 1440 -> 10 PF; 576 TB/s -> 8 TB/s; nvidia-smi 189471 MiB; NVLink 5 is 1.8 TB/s bidirectional."""
    g = gpu("gb200")
    assert g.peak_flops_per_s["bf16"] == 360e15 / 72 / 2
    assert g.peak_flops_per_s["fp8"] == 720e15 / 72 / 2
    assert g.peak_flops_per_s["fp4"] == 1440e15 / 72 / 2
    assert g.memory_bw_bytes_per_s == 576e12 / 72
    assert g.memory_bytes == 189471 * MIB
    s = load_system("gb200")
    assert (s.gpu_gpu_link.bw_bytes_per_s, s.gpu_host_link.name, s.host.name) == (1.8e12 / 2, "nvlink-c2c", "Grace")


@pytest.mark.parametrize(
    "name, mib, dense",
    [  # dense peak per dtype, each = a published figure (with sparsity halved)
        ("h20", 97871, {"bf16": 148e12, "fp8": 296e12}),
        ("h100-pcie", 81559, {"bf16": 756e12, "fp8": 1513e12}),
        ("a100-pcie-80gb", 81920, {"bf16": 312e12, "int8": 624e12}),
        ("l4", 23034, {"bf16": 242e12 / 2, "fp8": 485e12 / 2}),
        ("a10", 23028, {"bf16": 125e12, "int8": 250e12}),
        # RTX 5090 bf16: the FP32-accumulate 209.5 TF (SPECS.md N1), half of 838.4 sparse / 2 = 419.2 (FP16 accumulate)
        ("rtx-5090", 32607, {"bf16": 209.5e12, "fp8": 1676.8e12 / 2, "fp4": 3352e12 / 2}),
        ("rtx-pro-6000", 97887, {"fp4": 4000e12 / 2, "fp8": 4000e12 / 4, "bf16": 4000e12 / 8}),
        ("b200", 183359, {"bf16": 4.5e15 / 2, "fp4": 144e15 / 8 / 2}),
    ],
)
def test_nvidia_gpus_memory_and_dense_peaks(name: str, mib: int, dense: dict) -> None:
    """Capacity is nvidia-smi's MiB total x 2**20; peaks are the dense figures."""
    g = gpu(name)
    assert g.memory_bytes == mib * MIB
    for dtype, value in dense.items():
        assert g.peak_flops_per_s[dtype] == pytest.approx(value), dtype


def test_amd_gpus() -> None:
    """MI300X: rocm-smi 205,822,885,888 B; 1307.4 TF bf16 = 2100 MHz x 1216 x 256 x 2 (N4); 304 CUs;
    MI325X: same compute, 256 GiB [E], 6 TB/s."""
    m = gpu("mi300x")
    assert m.memory_bytes == m.torch_memory_bytes == 205_822_885_888
    assert m.peak_flops_per_s["bf16"] == pytest.approx(2.1e9 * 1216 * 256 * 2, rel=1e-4)
    assert m.peak_flops_per_s["fp8"] == pytest.approx(2 * m.peak_flops_per_s["bf16"], rel=1e-4)
    n = gpu("mi325x")
    assert n.peak_flops_per_s == m.peak_flops_per_s and n.memory_bytes == 256 * 2**30
    assert (n.memory_bw_bytes_per_s, m.memory_bw_bytes_per_s) == (6.0e12, 5.3e12)


def test_fp4_only_on_blackwell_and_fp8_from_ada_on() -> None:
    """fp4 tensor cores: Blackwell only; fp8: Ada, Hopper, Blackwell, CDNA3 - not Volta or Ampere."""
    gpus = {g.name: g for g in catalog("gpu").values()}  # type: ignore[attr-defined]
    fp4 = {n for n, g in gpus.items() if "fp4" in g.peak_flops_per_s}
    assert fp4 == {"B200", "GB200", "RTX-5090", "RTX-PRO-6000"}
    no_fp8 = {n for n, g in gpus.items() if "fp8" not in g.peak_flops_per_s}
    assert no_fp8 == {"A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIe-80GB", "A10", "V100-SXM2-16GB", "V100-SXM2-32GB"}
    assert all("int4" not in g.peak_flops_per_s for g in gpus.values())


@pytest.mark.parametrize(
    "hw, weight, gemm",
    [
        ("b200", "fp4", "fp4"),  # W4A4 on Blackwell tensor cores
        ("rtx5090", "fp4", "fp4"),
        ("h100", "fp4", "bf16"),  # no fp4 tensor cores: weight-only, dequantized to bf16
        ("a100-pcie", "fp8", "bf16"),  # Ampere: Marlin-style fp8 weight-only
        ("l4", "fp8", "fp8"),  # Ada has fp8
        ("mi300x", "fp8", "fp8"),
        ("v100", "fp8", "fp16"),  # no bf16 either: activations fp16
        ("b200", "int4", "bf16"),  # int4 stays W4A16
    ],
)
def test_weight_dtype_uses_tensor_cores_the_gpu_has(hw: str, weight: str, gemm: str) -> None:
    """fp8/fp4 weights run on tensor cores of that type where the GPU lists a peak, else dequantize."""
    dep = build_deployment(hw, "llama-3.1-8b", weight_dtype=weight)
    assert dep.gemm_dtype == gemm
    assert dep.wb == {"fp4": 0.5, "fp8": 1.0, "int4": 0.5}[weight]  # 4 / 8 bits per weight


def test_fp4_halves_weight_bytes_and_uses_the_fp4_peak() -> None:
    """Llama-3.1-8B on B200: fp4 weights are 0.5 B each except the embedding and LM head, which
    quantized checkpoints keep in bf16 (2 x 128,256 x 4,096 = 1,050,673,152 of them):
    (8,030,261,248 - 1,050,673,152) x 0.5 + 1,050,673,152 x 2 = 5,591,140,352 B; the GEMM FLOPs
    run at 9 PF x eff."""
    bf16, fp4 = (build_deployment("b200", "llama-3.1-8b", weight_dtype=w) for w in ("bf16", "fp4"))
    assert bf16.weight_bytes_per_gpu == 8_030_261_248 * 2
    assert fp4.weight_bytes_per_gpu == 5_591_140_352
    rf = Roofline(fp4.system)
    part = Part("attn_proj", "gemm", dtype="fp4", flops=9e15)
    assert rf.unit_divisor(part, "flops") == 9e15 * fp4.system.eff.gemm.compute


def _allreduce_s(system, group: int, nbytes: float) -> float:
    part = Part("allreduce", "collective", device="link", link_bytes=nbytes, launches=1.0, group=group)
    return float(Roofline(system).seconds(Cost.of(part)))


def test_pcie_only_servers_reduce_over_pcie() -> None:
    """PCIe-only nodes (no peer link) run collectives over their PCIe link: on h100-pcie one ring
    all-reduce moving 1 GB per GPU takes 1e9 / (63e9 x 0.586) s + one 5.11 us launch."""
    for name in ("h100-pcie", "a100-pcie-80g", "l4", "a10", "rtx-pro-6000", "rtx5090", "h20"):
        s = load_system(name)
        expected = s.gpu_host_link if s.gpu.peer_link is None and not s.spec.gpu_gpu_link else s.gpu_gpu_link
        assert s.gpu_gpu_link is expected
    s = load_system("h100-pcie")
    assert (s.gpu_gpu_link.name, s.nvlink_peers, s.calibration) == ("pcie5-x16", False, "datasheet")
    eff = default_efficiencies().collective
    assert _allreduce_s(s, 8, 1e9) == pytest.approx(1e9 / (63e9 * eff.memory) + eff.overhead_s)


def test_mi300x_mesh_bandwidth_grows_with_the_group() -> None:
    """Infinity Fabric full mesh: a group of g GPUs drives g - 1 links of 64 GB/s (capped at 448):
    1 GB per GPU takes 1e9 / (64e9 x 0.586) s at TP 2, 1e9 / (192e9 x 0.586) at TP 4, 1e9 / (448e9 x 0.586) at TP 8."""
    s = load_system("mi300x")
    eff = default_efficiencies().collective
    for group, links in ((2, 1), (4, 3), (8, 7)):
        assert _allreduce_s(s, group, 1e9) == pytest.approx(1e9 / (links * 64e9 * eff.memory) + eff.overhead_s)
    assert s.nvlink_peers  # direct GPU fabric: vLLM's custom all-reduce applies


def test_tp_over_pcie_prices_the_allreduce() -> None:
    """--tp 8 on the L4 node: Llama-3.1-8B's two all-reduces per layer move 2 x 7/8 x T x 4096 x 2 B each
    over PCIe 4 (31.5 GB/s x 0.586)."""
    dep = build_deployment("l4", "llama-3.1-8b", tp=8)
    part = next(p for p in linear_cost(dep, 16.0, 16.0).parts if p.op == "collective")
    per_call = 2 * 7 / 8 * 16 * 4096 * 2  # ring bytes of one all-reduce of 16 tokens x 4096 bf16
    assert (part.group, part.link_bytes, part.launches) == (8, pytest.approx(2 * 32 * per_call), 64)
    eff = default_efficiencies().collective
    rf = Roofline(dep.system)
    assert rf.unit_divisor(part, "link_bytes") == pytest.approx(31.5e9 * eff.memory)


def test_gpu_file_alone_is_one_gpu_and_says_how_to_get_more(tmp_path) -> None:
    """A GPU YAML alone is one GPU: --tp 2 is a one-line error pointing at system files."""
    from kvsim.hardware import HW_DIR

    path = tmp_path / "my-gpu.yaml"
    path.write_text((HW_DIR / "gpus" / "l4.yaml").read_text().replace("name: L4", "name: My-L4"))
    with pytest.raises(ConfigError) as exc:
        Deployment(system=load_system(str(path)), model=load_model("llama-3.1-8b"), tp=2)
    (line,) = str(exc.value).splitlines()
    assert "--tp 2 must be between 1 and the 1 GPUs of My-L4" in line and "kvsim hardware new system" in line


def test_list_hardware_error_bounds_hold():
    """'held-out median |err| <= N%' is a bound: N is rounded up (A100's worst op is 6.38 %: '<= 7%', it said
    '<= 6%'; user audit)."""
    from kvsim.commands.listing import _calibration, _up
    from kvsim.hardware import load_system, profile_of

    assert _up(0.0638) == 7 and _up(0.05) == 5 and _up(0.051) == 6
    for name in ("a100-80g", "h100", "h200", "l40s"):
        profile = profile_of(name)
        worst = max(e.median_abs for e in profile.measured_error.values())
        text = _calibration(load_system(name), profile)
        bound = int(text.split("<= ")[1].split("%")[0])
        assert worst * 100 <= bound < worst * 100 + 1, (name, worst, text)
