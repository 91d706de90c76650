"""Hardware spec files: every shipped YAML loads, names resolve, errors are one line per problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import kvsim
from kvsim.errors import SpecError
from kvsim.hardware import (
    DEFAULT_HOST,
    HW_DIR,
    OP_CLASSES,
    Efficiencies,
    GPUSpec,
    HostSpec,
    LinkSpec,
    ProfileSpec,
    SystemSpec,
    catalog,
    default_efficiencies,
    load_system,
)
from kvsim.specbase import read_yaml, validate_dict

KINDS = {"gpus": GPUSpec, "hosts": HostSpec, "links": LinkSpec, "systems": SystemSpec, "profiles": ProfileSpec}
SPEC_FILES = [(sub, p) for sub in KINDS for p in sorted((HW_DIR / sub).glob("*.yaml"))]


@pytest.mark.parametrize("sub,path", SPEC_FILES, ids=[f"{s}/{p.name}" for s, p in SPEC_FILES])
def test_every_shipped_yaml_loads(sub: str, path: Path) -> None:
    """Each shipped hardware YAML validates against its model and cites a source."""
    spec = validate_dict(KINDS[sub], read_yaml(path), str(path))
    assert spec.source.strip()


def test_every_kind_has_files_and_catalog_builds() -> None:
    """The catalogs build without duplicate names across aliases."""
    counts = {kind: len({s.name for s in catalog(kind).values()}) for kind in ("gpu", "host", "link", "system", "profile")}
    assert counts == {"gpu": 20, "host": 6, "link": 14, "system": 21, "profile": 4}


def test_default_efficiencies_cover_every_op_class() -> None:
    """default.yaml has one entry per op class, all fractions in (0, 1], and a source."""
    eff = default_efficiencies()
    assert eff.source
    for op in OP_CLASSES:
        e = eff.of(op)
        assert 0 < e.compute <= 1 and 0 < e.memory <= 1 and e.overhead_s >= 0


def test_default_efficiency_values_follow_specs_md() -> None:
    """Defaults of the classes not fitted on measured GPU kernels match SPECS.md Table H2 / N9 / N11
    (gemm, attention and collective are fitted: tests/test_gpu_kernels.py checks them against the fit)."""
    eff = default_efficiencies()
    assert eff.memcpy.memory == 0.90
    # sampled-row gathers are latency bound: kvsim validate measures ~0.07 of DRAM bandwidth on this CPU
    assert eff.cpu_attn.memory == 0.10
    assert eff.pcie.memory == 0.85  # 55.4 / 63 GB/s = 88 % measured, rounded down
    assert eff.elementwise.memory == 0.80


@pytest.mark.parametrize(
    "alias,gpu,host,num_gpus",
    [
        ("a100", "A100-SXM4-80GB", "EPYC-7763", 8),
        ("a100-80g", "A100-SXM4-80GB", "EPYC-7763", 8),
        ("a100-40g", "A100-SXM4-40GB", "EPYC-7763", 8),
        ("a100-80g-spr", "A100-SXM4-80GB", "Xeon-8480+", 8),
        ("v100", "V100-SXM2-32GB", "Xeon-8380", 8),
        ("v100-16g", "V100-SXM2-16GB", "Xeon-8380", 8),
        ("v100-32g", "V100-SXM2-32GB", "Xeon-8380", 8),
        ("l20", "L20", "Xeon-8563C", 8),
        ("l20-8563c", "L20", "Xeon-8563C", 8),
        ("4090", "RTX-4090", "EPYC-7763", 8),
        ("rtx4090", "RTX-4090", "EPYC-7763", 8),
        ("l40s", "L40S", "EPYC-9654", 8),
        ("h100", "H100-SXM", "Xeon-8480+", 8),
        ("h200", "H200", "Xeon-8480+", 8),
        ("H100", "H100-SXM", "Xeon-8480+", 8),  # case-insensitive
        ("a100_80g", "A100-SXM4-80GB", "EPYC-7763", 8),  # '_' == '-'
        ("b200", "B200", "Xeon-8480+", 8),
        ("gb200", "GB200", "Grace", 4),  # one NVL72 compute tray: 2 Grace + 4 GPUs
        ("h20", "H20", "Xeon-8480+", 8),
        ("h100-pcie", "H100-PCIe", "Xeon-8480+", 8),
        ("a100-pcie", "A100-PCIe-80GB", "EPYC-7763", 8),
        ("l4", "L4", "Xeon-8380", 8),
        ("a10", "A10", "EPYC-7763", 8),
        ("rtx-pro-6000", "RTX-PRO-6000", "EPYC-9654", 8),
        ("5090", "RTX-5090", "EPYC-9654", 8),
        ("mi300x", "MI300X", "EPYC-9654", 8),
        ("mi325x", "MI325X", "EPYC-9654", 8),
    ],
)
def test_system_aliases_resolve(alias: str, gpu: str, host: str, num_gpus: int) -> None:
    """The short --hw names resolve to the documented node."""
    s = load_system(alias)
    assert (s.gpu.name, s.host.name, s.num_gpus) == (gpu, host, num_gpus)


def test_every_gpu_name_resolves_to_a_node_with_that_gpu() -> None:
    """Any GPU name or alias given to --hw lands on a system built around that GPU."""
    for key, gpu in catalog("gpu").items():
        assert load_system(key).gpu.name == gpu.name, key  # type: ignore[attr-defined]


def test_links_follow_gpu_generation() -> None:
    """Host and peer links come from the GPU spec; PCIe-only cards fall back to PCIe."""
    a100 = load_system("a100")
    assert (a100.gpu_host_link.name, a100.gpu_gpu_link.name) == ("pcie4-x16", "nvlink3")
    assert load_system("a100-80g-spr").gpu_host_link.name == "pcie4-x16"  # Gen4 GPU on a Gen5 host
    assert load_system("v100").gpu_gpu_link.name == "nvlink2"
    assert load_system("h200").gpu_gpu_link.name == "nvlink4"
    assert load_system("l20").gpu_gpu_link.name == "pcie4-x16"


def test_link_bandwidths_are_per_direction() -> None:
    """Per-direction link bandwidths: PCIe 15.75/31.5/63 GB/s, NVLink = printed bidir total / 2."""
    bw = {k: catalog("link")[k].bw_bytes_per_s for k in ("pcie3-x16", "pcie4-x16", "pcie5-x16")}  # type: ignore[attr-defined]
    # 8 GT/s * 16 lanes * 128/130 / 8 bit = 15.75e9 B/s; Gen4 x2, Gen5 x4
    assert bw == {"pcie3-x16": 15.75e9, "pcie4-x16": 31.5e9, "pcie5-x16": 63.0e9}
    # NVIDIA prints 300 / 600 / 900 GB/s bidirectional per GPU
    assert catalog("link")["nvlink2"].bw_bytes_per_s == 300e9 / 2  # type: ignore[attr-defined]
    assert catalog("link")["nvlink3"].bw_bytes_per_s == 600e9 / 2  # type: ignore[attr-defined]
    assert catalog("link")["nvlink4"].bw_bytes_per_s == 900e9 / 2  # type: ignore[attr-defined]


def test_gpu_memory_capacity_is_what_frameworks_see() -> None:
    """Capacities are nvidia-smi totals in bytes (binary MiB/GiB), not decimal marketing GB."""
    gpu = catalog("gpu")
    assert gpu["a100-40g"].memory_bytes == 40 * 2**30  # type: ignore[attr-defined]  # 40960 MiB
    assert gpu["a100-80g"].memory_bytes == 80 * 2**30  # type: ignore[attr-defined]  # 81920 MiB
    assert gpu["v100-16g"].memory_bytes == 16 * 2**30  # type: ignore[attr-defined]
    assert gpu["v100-32g"].memory_bytes == 32 * 2**30  # type: ignore[attr-defined]
    assert gpu["h100-sxm"].memory_bytes == 81559 * 2**20  # type: ignore[attr-defined]  # = 85,520,809,984
    assert gpu["h200"].memory_bytes == 143771 * 2**20  # type: ignore[attr-defined]
    assert gpu["l20"].memory_bytes == gpu["l40s"].memory_bytes == 46068 * 2**20  # type: ignore[attr-defined]
    assert gpu["rtx4090"].memory_bytes == 24564 * 2**20  # type: ignore[attr-defined]


def test_dense_peaks_and_dtype_fallback() -> None:
    """Peaks are dense; a dtype without tensor cores runs at the fp32 rate (V100 bf16)."""
    assert load_system("h100").gpu_peak_flops_per_s("bf16") == 989e12
    assert load_system("a100").gpu_peak_flops_per_s("fp16") == 312e12
    assert load_system("4090").gpu_peak_flops_per_s("fp16") == 165.2e12  # FP32-accumulate rate (N1)
    v100 = load_system("v100")
    assert "bf16" not in v100.gpu.peak_flops_per_s
    assert v100.gpu_peak_flops_per_s("bf16") == v100.gpu_peak_flops_per_s("fp32") == 15.7e12
    # ridge point (F6): 312e12 / 2.039e12 = 153 FLOP/B for A100-80GB
    a100 = load_system("a100").gpu
    assert 150 < a100.peak_flops_per_s["bf16"] / a100.memory_bw_bytes_per_s < 156


def test_host_dram_bandwidth_is_channels_times_rate_times_8() -> None:
    """Per-socket peak DRAM bandwidth = channels x MT/s x 8 B (SPECS.md N11)."""
    host = catalog("host")
    assert host["8480+"].dram_bw_bytes_per_s == 8 * 4800e6 * 8  # type: ignore[attr-defined]  # 307.2e9
    assert host["8563c"].dram_bw_bytes_per_s == 8 * 5600e6 * 8  # type: ignore[attr-defined]  # 358.4e9
    assert host["epyc-9654"].dram_bw_bytes_per_s == 12 * 4800e6 * 8  # type: ignore[attr-defined]  # 460.8e9
    assert host["7763"].dram_bw_bytes_per_s == 8 * 3200e6 * 8  # type: ignore[attr-defined]  # 204.8e9
    s = load_system("l20")
    assert s.host_dram_bw_bytes_per_s == s.host_sockets * 358.4e9


def test_host_fp32_peak_follows_n10_formula() -> None:
    """CPU fp32 peak = cores x FLOP/cycle x clock (SPECS.md N10)."""
    host = catalog("host")
    assert host["8480+"].peak_flops_per_s["fp32"] == pytest.approx(56 * 64 * 2.0e9)  # type: ignore[attr-defined]
    assert host["8380"].peak_flops_per_s["fp32"] == pytest.approx(40 * 64 * 2.3e9)  # type: ignore[attr-defined]
    assert host["9654"].peak_flops_per_s["fp32"] == pytest.approx(96 * 32 * 2.4e9)  # type: ignore[attr-defined]
    assert host["7763"].peak_flops_per_s["fp32"] == pytest.approx(64 * 32 * 2.45e9)  # type: ignore[attr-defined]


def test_gpu_efficiency_overrides_apply_only_where_measured() -> None:
    """A GPU's MAMF GEMM fraction applies where no measured profile exists; a profile replaces it."""
    base = default_efficiencies()
    a100_40 = load_system("a100-40g")  # no kernel tables for the 40 GB part
    assert a100_40.eff.gemm.compute == 0.869  # 271.2 / 312
    assert a100_40.eff.gemm.memory == base.gemm.memory
    assert a100_40.eff.attn_decode == base.at_clock(1.41e9).attn_decode  # the defaults at its 1.41 GHz SM clock
    from kvsim.hardware import profile_of

    for name in ("a100", "h100", "l40s"):
        s = load_system(name)
        prof = profile_of(s.name)
        assert s.eff.gemm.compute == prof.efficiency["gemm"]["compute"]
        assert s.eff.elementwise == base.elementwise  # classes without measurements keep the defaults


def test_prices_are_sourced_and_dated() -> None:
    """Every GPU has a price with a source (or a labelled estimate) and a date."""
    for gpu in {g.name: g for g in catalog("gpu").values()}.values():  # type: ignore[attr-defined]
        assert gpu.price is not None, gpu.name
        assert gpu.price.source and gpu.price.date and gpu.price.usd_per_hour > 0


# ---------- user files and error messages ----------


def test_unknown_name_lists_close_matches_and_choices() -> None:
    """An unknown --hw name suggests close matches and lists every choice."""
    with pytest.raises(SpecError) as exc:
        load_system("a100-80")
    msg = str(exc.value)
    assert msg.startswith("unknown hardware 'a100-80'.")
    assert "Did you mean:" in msg and "a100-80g" in msg.split("Choices:")[0]
    assert "Choices:" in msg and "h200" in msg and "l20" in msg


def test_user_gpu_yaml_is_a_single_gpu_on_the_default_host(tmp_path: Path) -> None:
    """--hw path/to/gpu.yaml: one GPU on the default host, with the file's overrides."""
    path = tmp_path / "my-gpu.yaml"
    text = (HW_DIR / "gpus" / "a100-sxm4-80gb.yaml").read_text()
    path.write_text(text.replace("name: A100-SXM4-80GB", "name: My-A100"))
    s = load_system(str(path))
    assert (s.gpu.name, s.num_gpus) == ("My-A100", 1)
    assert s.host.name == catalog("host")[DEFAULT_HOST].name  # type: ignore[attr-defined]
    assert s.eff.gemm.compute == 0.869


def test_user_system_yaml(tmp_path: Path) -> None:
    """--hw path/to/system.yaml referring to shipped parts resolves them by name."""
    path = tmp_path / "node.yml"
    path.write_text("kind: system\nname: my-node\ngpu: h100\nnum_gpus: 4\nhost: epyc-9654\nsource: test\n")
    s = load_system(str(path))
    assert (s.name, s.gpu.name, s.host.name, s.num_gpus) == ("my-node", "H100-SXM", "EPYC-9654", 4)


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported as path:line."""
    path = tmp_path / "broken.yaml"
    path.write_text("kind: gpu\nname: X\npeak_flops_per_s: {fp32: 1.0e12\nsm_count: 10\n")
    with pytest.raises(SpecError) as exc:
        load_system(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}:") and "invalid YAML" in msg
    line = int(msg[len(str(path)) + 1 :].split(":")[0])
    assert line in (3, 4)  # the unclosed flow mapping opens on line 3; PyYAML reports where it notices


def test_bad_fields_give_one_line_per_problem(tmp_path: Path) -> None:
    """Wrong type, unknown field and missing field: one line naming the file once and each field, "; " between
    problems; from the fourth problem on only the fields are named (the error stays one line)."""
    src = (HW_DIR / "gpus" / "l40s.yaml").read_text()
    text = src.replace("memory_bytes: 48305799168", "memory_bytes: lots").replace("sm_count: 142\n", "")
    path = tmp_path / "bad-gpu.yaml"
    path.write_text(text + "clock_mhz: 2520\n")
    with pytest.raises(SpecError) as exc:
        load_system(str(path))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: ")
    parts = msg[len(f"{path}: "):].split("; ")
    by_field = {p.split(": ")[0]: p for p in parts}
    assert set(by_field) == {"memory_bytes", "sm_count", "clock_mhz"}
    assert "'lots'" in by_field["memory_bytes"]
    assert "Field required" in by_field["sm_count"]
    assert "Extra inputs are not permitted" in by_field["clock_mhz"]
    path.write_text(text + "clock_mhz: 2520\nboost_mhz: 2600\n")
    with pytest.raises(SpecError, match=r"; 1 more: boost_mhz$"):
        load_system(str(path))


def test_wrong_kind_for_hw_is_rejected(tmp_path: Path) -> None:
    """--hw accepts only kind system or gpu."""
    path = tmp_path / "host.yaml"
    shutil.copy(HW_DIR / "hosts" / "epyc-7763.yaml", path)
    with pytest.raises(SpecError, match="kind must be 'system' or 'gpu'"):
        load_system(str(path))


def test_unknown_efficiency_class_in_gpu_file(tmp_path: Path) -> None:
    """A typo in a GPU's efficiency override names the GPU and the valid classes."""
    src = (HW_DIR / "gpus" / "h100-sxm.yaml").read_text()
    path = tmp_path / "typo.yaml"
    path.write_text(src.replace("gemm: {compute: 0.803}", "gemmm: {compute: 0.803}"))
    with pytest.raises(SpecError, match=r"typo.yaml: efficiency: unknown op class 'gemmm'"):  # (the file, as every spec error names it)
        load_system(str(path))


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    """A --hw path that does not exist is reported, not a traceback."""
    with pytest.raises(SpecError, match="cannot read"):
        load_system(str(tmp_path / "nope.yaml"))


def test_efficiency_overrides_reject_bad_values() -> None:
    """Overrides are validated: fractions must stay in (0, 1]."""
    with pytest.raises(Exception):
        default_efficiencies().with_overrides({"gemm": {"compute": 1.5}})
    assert isinstance(default_efficiencies().with_overrides({"gemm": {"compute": 0.5}}), Efficiencies)


def test_yaml_fast_loader_reads_the_catalog_as_the_python_loader_does():
    """read_yaml parses with libyaml when PyYAML has it: every bundled YAML file gives the same
    object as PyYAML's pure-Python safe loader."""
    root = Path(kvsim.__file__).parent
    files = sorted(root.rglob("*.yaml"))
    assert len(files) > 50
    for f in files:
        assert read_yaml(f) == yaml.safe_load(f.read_text(encoding="utf-8")), f


def test_yaml_error_is_the_python_loaders_message(tmp_path):
    """A file the fast loader rejects is reported with the pure-Python loader's message (it names
    the character: libyaml says only 'found character that cannot start any token')."""
    p = tmp_path / "gpu.yaml"
    p.write_text("name: x\n\tmemory_gb: 80\n", encoding="utf-8")
    with pytest.raises(SpecError) as err:
        read_yaml(p)
    assert str(err.value) == f"{p}:2: invalid YAML: found character '\\t' that cannot start any token"
