"""Your own hardware: system files naming parts by catalog name or relative path, TP on a user
system, `kvsim list hardware --hw FILE`, and `kvsim hardware new gpu|system` starting files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import SpecError
from kvsim.hardware import HW_DIR, load_spec_file, load_system

runner = CliRunner()


def kvsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _parts(tmp_path: Path) -> Path:
    """parts/gpu.yaml (a GPU naming its link by a relative path), parts/pcie.yaml, parts/cpu.yaml."""
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "gpu.yaml").write_text((HW_DIR / "gpus" / "l40s.yaml").read_text()
                                    .replace("name: L40S", "name: My-GPU").replace("aliases: [l40s-48g, l40s-48gb]", "aliases: []")
                                    .replace("host_link: pcie4-x16", "host_link: pcie.yaml"))
    (parts / "pcie.yaml").write_text((HW_DIR / "links" / "pcie4-x16.yaml").read_text()
                                     .replace("name: pcie4-x16", "name: my-pcie").replace("bw_bytes_per_s: 31.5e9", "bw_bytes_per_s: 25.0e9"))
    (parts / "cpu.yaml").write_text((HW_DIR / "hosts" / "epyc-9654.yaml").read_text().replace("name: EPYC-9654", "name: My-CPU"))
    return parts


def test_system_parts_by_relative_path(tmp_path: Path) -> None:
    """A system file names its GPU and host by paths relative to itself; the GPU's own link path is
    relative to the GPU file. With num_gpus 4 it runs --tp 4, collectives over the GPU's host link."""
    _parts(tmp_path)
    node = tmp_path / "node.yaml"
    node.write_text("kind: system\nname: my-node\ngpu: parts/gpu.yaml\nnum_gpus: 4\nhost: parts/cpu.yaml\nsource: test\n")
    s = load_system(str(node))
    assert (s.name, s.gpu.name, s.host.name, s.num_gpus) == ("my-node", "My-GPU", "My-CPU", 4)
    assert (s.gpu_host_link.name, s.gpu_gpu_link.name, s.gpu_gpu_link.bw_bytes_per_s) == ("my-pcie", "my-pcie", 25e9)
    assert s.calibration == "datasheet"  # a user GPU never takes a shipped profile
    dep = build_deployment(str(node), "llama-3.1-8b", tp=4)
    assert dep.tp == 4 and dep.weight_bytes_per_gpu == 8_030_261_248 * 2 / 4


def test_system_links_by_catalog_name_and_path(tmp_path: Path) -> None:
    """Catalog names and paths mix: a catalog GPU with a user peer link file."""
    parts = _parts(tmp_path)
    node = tmp_path / "node.yaml"
    node.write_text("kind: system\nname: n2\ngpu: h100-pcie\nnum_gpus: 2\nhost: xeon-8480p\n"
                    "gpu_gpu_link: nvlink-bridge\ngpu_host_link: parts/pcie.yaml\nsource: bridged pair\n")
    s = load_system(str(node))
    assert (s.gpu.name, s.gpu_gpu_link.name, s.gpu_host_link.name, parts.exists()) == ("H100-PCIe", "nvlink-bridge", "my-pcie", True)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("gpu", "parts/nope.yaml", "gpu: no gpu file {dir}/parts/nope.yaml (relative to {dir})"),
        ("gpu", "h1000", "gpu: unknown gpu 'h1000'. Did you mean: h100"),
        ("gpu", "parts/cpu.yaml", "parts/cpu.yaml: kind: expected 'gpu' for this file, got 'host'"),
        ("host", "parts/gpu.yaml", "parts/gpu.yaml: kind: expected 'host' for this file, got 'gpu'"),
        ("gpu_gpu_link", "nvlink9", "gpu_gpu_link: unknown link 'nvlink9'"),
    ],
)
def test_bad_references_are_one_line(tmp_path: Path, field: str, value: str, needle: str) -> None:
    """A reference that does not resolve names the file, the field and what was expected."""
    _parts(tmp_path)
    data = {"kind": "system", "name": "bad", "gpu": "l40s", "num_gpus": 2, "host": "epyc-9654", "source": "t"}
    data[field] = value
    node = tmp_path / "node.yaml"
    node.write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    with pytest.raises(SpecError) as exc:
        load_system(str(node))
    (line,) = str(exc.value).splitlines()
    assert needle.format(dir=tmp_path) in line
    assert line.startswith(str(tmp_path))


def test_bad_link_file_names_its_field(tmp_path: Path) -> None:
    """A link file with a bad number: one line naming that file and field."""
    parts = _parts(tmp_path)
    (parts / "pcie.yaml").write_text((parts / "pcie.yaml").read_text().replace("bw_bytes_per_s: 25.0e9", "bw_bytes_per_s: -1"))
    with pytest.raises(SpecError) as exc:
        load_system(str(parts / "gpu.yaml"))
    assert str(exc.value).startswith(f"{parts / 'pcie.yaml'}: bw_bytes_per_s: must be in [1000, 1e+15] bytes/s")


def test_list_hardware_shows_user_files(tmp_path: Path) -> None:
    """`kvsim list hardware --hw FILE` adds the file's row, as --hw loads it, after the catalog."""
    _parts(tmp_path)
    node = tmp_path / "node.yaml"
    node.write_text("kind: system\nname: my-node\ngpu: parts/gpu.yaml\nnum_gpus: 4\nhost: parts/cpu.yaml\nsource: t\n")
    r = runner.invoke(app, ["list", "hardware", "--hw", str(node), "--hw", str(tmp_path / "parts" / "gpu.yaml"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    mine = {row["name"]: row for row in rows[-2:]}
    assert mine["my-node"]["gpus"] == 4 and mine["my-node"]["gpu"] == "My-GPU" and mine["my-node"]["link"] == "my-pcie"
    assert mine["my-node"]["aliases"] == [f"file {node}"]
    assert mine["My-GPU"]["gpus"] == 1 and mine["My-GPU"]["host"] == "2x Xeon-8480+"  # a GPU alone: default host
    assert {"gb200", "mi300x", "h100-pcie"} <= {row["name"] for row in rows}


def test_list_models_shows_user_models() -> None:
    """`kvsim list models --model CONFIG` adds the imported model with its window and experts."""
    cfg = Path(__file__).parent / "data" / "hf" / "more" / "gemma-3-4b-it.json"
    r = runner.invoke(app, ["list", "models", "--model", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)[-1]
    assert (row["name"], row["window"], row["experts"]) == ("google/gemma-3-4b-it", "1,024 on 29/34", "-")
    rows = {x["name"]: x for x in json.loads(runner.invoke(app, ["list", "models", "--json"]).output)}
    # MoE models show what a token multiplies by (top-k + shared experts, attention, LM head; no embedding lookup)
    assert rows["qwen3-30b-a3b"]["params"] == "30.53B (3.04B active)" and rows["llama-3.1-8b"]["params"] == "8.03B"
    # a hybrid model's KV per token: its attention layers only (Jamba: 2 x 4 layers x 8 x 128 x 2 = 16,384; it said 131,072)
    assert rows["jamba-v0.1"]["KV B/token (16-bit)"] == "16,384"


# ---------- kvsim hardware new ----------


def _fill(text: str, values: dict[str, str]) -> str:
    """Replace `key: null` lines (keeping comments) with the given values."""
    for key, value in values.items():
        text, n = re.subn(rf"^(\s*{key}): null", rf"\1: {value}", text, flags=re.M)
        assert n == 1, key
    return text


GPU_NUMBERS = {"memory_bytes": "25769803776", "memory_bw_bytes_per_s": "1.0e12", "fp32": "50.0e12", "tf32": "100.0e12",
               "bf16": "200.0e12", "fp16": "200.0e12", "fp8": "400.0e12", "int8": "400.0e12", "fp4": "800.0e12",
               "l2_bytes": "67108864", "sm_count": "100", "tdp_w": "300"}


def test_new_gpu_file_loads_once_filled(tmp_path: Path) -> None:
    """The GPU template names every missing number when loaded as is, and loads once they are filled in."""
    out = tmp_path / "g.yaml"
    r = runner.invoke(app, ["hardware", "new", "gpu", "My-GPU", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert text.count("null") >= len(GPU_NUMBERS) and "# " in text
    with pytest.raises(SpecError) as exc:
        load_system(str(out))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1  # every field to fill named on one line
    assert all(f in msg for f in ("memory_bytes", "memory_bw_bytes_per_s", "peak_flops_per_s.fp32", "sm_count"))
    out.write_text(_fill(text, GPU_NUMBERS))
    s = load_system(str(out))
    assert (s.gpu.name, s.gpu.peak_flops_per_s["fp4"], s.gpu_host_link.name) == ("My-GPU", 800e12, "pcie5-x16")


def test_new_system_file_with_a_gpu_path(tmp_path: Path) -> None:
    """`hardware new system --gpu g.yaml --num-gpus 4 --host epyc-9654` loads as is next to the GPU file."""
    (tmp_path / "g.yaml").write_text(_fill(runner.invoke(app, ["hardware", "new", "gpu", "G"]).output, GPU_NUMBERS))
    out = tmp_path / "node.yaml"
    r = runner.invoke(app, ["hardware", "new", "system", "my-node", "--gpu", "g.yaml", "--num-gpus", "4",
                            "--host", "epyc-9654", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = load_system(str(out))
    assert (s.name, s.gpu.name, s.num_gpus, s.host.name) == ("my-node", "G", 4, "EPYC-9654")


@pytest.mark.parametrize("kind, like", [("gpu", "h100"), ("gpu", "mi300x"), ("system", "gb200"), ("system", "l4"),
                                        ("gpu", "a100"), ("gpu", "4090"), ("gpu", "A100")])
def test_new_file_like_a_catalog_entry_loads_as_is(tmp_path: Path, kind: str, like: str) -> None:
    """--like copies a catalog entry's numbers: the file loads unchanged with the same numbers. A GPU
    --like takes what --hw takes (a100 and 4090 are system aliases: their node's GPU)."""
    out = tmp_path / "x.yaml"
    assert runner.invoke(app, ["hardware", "new", kind, "mine", "--like", like, "--out", str(out)]).exit_code == 0
    copy, original = load_spec_file(kind, out), load_system(like)
    if kind == "gpu":
        assert copy.model_dump(exclude={"name", "aliases", "source", "notes"}) == original.gpu.model_dump(
            exclude={"name", "aliases", "source", "notes"})
    else:
        assert (copy.gpu, copy.num_gpus, copy.host) == (original.spec.gpu, original.num_gpus, original.spec.host)
        assert load_system(str(out)).gpu == original.gpu


def test_new_never_overwrites_without_force(tmp_path: Path) -> None:
    """An existing --out file is kept (one-line error, exit 1) unless --force is given."""
    out = tmp_path / "g.yaml"
    out.write_text("mine\n")
    r = kvsim("hardware", "new", "gpu", "X", "--out", str(out))
    assert r.returncode == 1 and r.stderr.strip() == f"error: --out {out}: file exists (use --force to overwrite it)"
    assert out.read_text() == "mine\n"
    r = kvsim("hardware", "new", "gpu", "X", "--out", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert "name: \"X\"" in out.read_text()
    r = kvsim("hardware", "new", "gpu", "X", "--out", str(tmp_path), "--force")  # a directory: said at once
    assert r.returncode == 1 and r.stderr.strip() == f"error: --out {tmp_path}: is a directory (expected a file name)"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["hardware", "new", "gpu", "X", "--like", "h1000"], "error: unknown gpu 'h1000'"),
        (["hardware", "new", "gpu", "X", "--num-gpus", "2"], "error: --gpu, --num-gpus and --host describe a system"),
        (["list", "models", "--hw", "a.yaml"], "error: --hw goes with `kvsim list hardware`"),
        (["estimate", "--hw", "does/not/exist.yaml"], "error: does/not/exist.yaml: cannot read"),
    ],
)
def test_hardware_command_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    """Bad options: exit 1, one 'error:' line, no traceback."""
    r = kvsim(*args, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith(needle) and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_new_gpu_like_a_measured_gpu_says_its_profile_is_not_copied(tmp_path: Path) -> None:
    """`hardware new gpu --like l40s` copies the datasheet numbers; the l40s node's measured kernel
    profile does not follow a GPU file, and the command now says so (as `new system --like` did; audit)."""
    r = kvsim("hardware", "new", "gpu", "mine", "--like", "l40s", "--out", str(tmp_path / "g.yaml"))
    assert r.returncode == 0 and "measured kernel profile of l40s is not copied" in r.stderr
    r = kvsim("hardware", "new", "gpu", "mine2", "--like", "l4", "--out", str(tmp_path / "g2.yaml"))
    assert r.returncode == 0 and "profile" not in r.stderr  # (no measured L4 profile)


def test_new_system_checks_its_gpu_and_host(tmp_path: Path) -> None:
    """--gpu / --host of a new system: a catalog name, or a file that exists relative to the --out
    file's folder; a missing path or an unknown name is a one-line error before anything is written
    (it used to write a file that then failed to load; audit)."""
    out = tmp_path / "sysdir" / "node.yaml"
    r = kvsim("hardware", "new", "system", "n", "--gpu", "parts/nope.yaml", "--num-gpus", "4", "--host", "epyc-9654",
              "--out", str(out))
    assert r.returncode == 1 and "no file" in r.stderr and "relative to the --out file's folder" in r.stderr
    assert not out.exists()
    r = kvsim("hardware", "new", "system", "n", "--gpu", "h100-sxm", "--num-gpus", "4", "--host", "nohost", "--out", str(out))
    assert r.returncode == 1 and "--host nohost: not a host in the catalog" in r.stderr and not out.exists()
    (tmp_path / "sysdir" / "parts").mkdir(parents=True)
    assert kvsim("hardware", "new", "gpu", "g", "--like", "l4", "--out", str(tmp_path / "sysdir" / "parts" / "g.yaml")).returncode == 0
    r = kvsim("hardware", "new", "system", "n", "--gpu", "parts/g.yaml", "--num-gpus", "4", "--host", "epyc-9654", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert kvsim("list", "hardware", "--hw", str(out)).returncode == 0


def test_new_system_gpu_takes_a_system_alias_as_like_does(tmp_path):
    """`--gpu a100` (a system alias, as --like and --hw take it) writes that node's GPU, A100-SXM4-80GB, with a
    note (it was refused as 'not a gpu in the catalog'; a user audit)."""
    out = tmp_path / "n.yaml"
    r = kvsim("hardware", "new", "system", "n", "--gpu", "a100", "--num-gpus", "2", "--host", "epyc-9654", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert 'gpu: "A100-SXM4-80GB"' in out.read_text() and "the GPU of the a100-80g node" in r.stderr


def test_a_gpu_file_without_a_bf16_peak_says_bf16_runs_at_the_fp32_rate(tmp_path):
    """Deleting the bf16 line (as the template says for a GPU without bf16 tensor cores) priced
    --weight-dtype bf16 at the fp32 rate (TTFT 438 ms -> 1.525 s) without a word (user audit); no
    catalog system gives the note at its default dtypes."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.hardware import catalog

    r = subprocess.run([sys.executable, "-m", "kvsim", "hardware", "new", "gpu", "NoBF", "--like", "a100", "--out",
                        str(tmp_path / "g.yaml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    g = tmp_path / "g.yaml"
    g.write_text("\n".join(line for line in g.read_text().splitlines() if not line.startswith("  bf16:")) + "\n")
    notes = build_deployment(str(g), "llama-3.1-8b", weight_dtype="bf16").notes
    # A100's fp32 (non-tensor-core) peak 19.5 TFLOP/s
    assert any("NoBF lists no bf16 peak" in n and "1.95e+13 FLOP/s" in n for n in notes)
    assert not any("lists no" in n for n in build_deployment(str(g), "llama-3.1-8b").notes)  # auto: fp16
    for name in sorted(set(catalog("system")))[:40]:
        assert not any("lists no" in n for n in build_deployment(name, "llama-3.1-8b").notes), name


def test_hardware_new_host_writes_a_host_a_system_can_name(tmp_path):
    """`hardware new` had no host kind: a user had to copy a catalog file (user audit). A host copied from
    EPYC-9654 loads as the catalog's numbers under the new name; a blank one names its missing fields."""
    from kvsim.hardware import get, load_system

    def run(*a):
        return subprocess.run([sys.executable, "-m", "kvsim", "hardware", "new", *a], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    assert run("host", "MyCPU", "--like", "epyc-9654", "--out", "h.yaml").returncode == 0
    assert run("system", "S", "--gpu", "a100", "--num-gpus", "8", "--host", "h.yaml", "--out", "s.yaml").returncode == 0
    s, ref = load_system(str(tmp_path / "s.yaml")), get("host", "epyc-9654")
    assert s.host.name == "MyCPU" and s.host_sockets == ref.sockets == 2
    assert (s.host.dram_bw_bytes_per_s, s.host.peak_flops_per_s) == (ref.dram_bw_bytes_per_s, ref.peak_flops_per_s)
    assert s.host_memory_bytes == ref.dram_bytes  # 1.5 TiB: the node's DRAM
    assert run("host", "Blank", "--out", "b.yaml").returncode == 0
    assert run("system", "S2", "--gpu", "a100", "--num-gpus", "8", "--host", "b.yaml", "--out", "s2.yaml").returncode == 0
    r = subprocess.run([sys.executable, "-m", "kvsim", "list", "hardware", "--hw", "s2.yaml"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 1 and "b.yaml: vendor:" in r.stderr and "cores:" in r.stderr and "Traceback" not in r.stderr
    assert "--gpu" in run("host", "H", "--gpu", "a100").stderr  # (system options refused)
