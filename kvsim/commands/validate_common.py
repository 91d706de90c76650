"""Shared parts of ``kvsim validate``'s commands: devices, exit kinds, options, the benchmark run and
output checks (``run``, ``calibrate`` and ``e2e`` use them; :mod:`kvsim.commands.validate` registers the commands).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import DURATION_HELP
from kvsim.durations import parse_duration_s
from kvsim.errors import ConfigError, KvsimError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "validate" / "results"
COMMITTED = RESULTS_DIR / "cpu-tiny-llama"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class BeyondTolerance(KvsimError):
    """A validation ran and printed its numbers, and some are beyond the thresholds."""

    exit_code = 2


class Contended(KvsimError):
    """The machine was busy with other work while timing: no number is reported."""

    exit_code = 3


DeviceOpt = Annotated[Device, typer.Option("--device", case_sensitive=False, help="where the kernels run")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model whose shapes to benchmark (default: tiny-llama on cpu, llama-3.1-8b on cuda)")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="small shapes, few repeats (< 60 s on 2 CPU cores; CI)")]
HwOpt = Annotated[str | None, typer.Option("--hw", help="cuda: the GPU spec (name or YAML) if the device name is not recognised")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads (default: torch's; e2e: the calibration's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
WaitQuietOpt = Annotated[str, typer.Option("--wait-quiet", metavar="DURATION", help=f"wait up to this long for other processes to go idle ({DURATION_HELP})")]


def need_torch(cmd: str):
    # lazy: CLI start-up
    from kvsim.validate import require_torch

    return require_torch(cmd)


def check_device(device: Device, cmd: str) -> None:
    torch = need_torch(cmd)
    if device == Device.cuda and not torch.cuda.is_available():
        raise ConfigError(f"kvsim validate {cmd} --device cuda: torch sees no CUDA device (torch {torch.__version__})")


def default_model(name: str | None, device: Device):
    # lazy: CLI start-up
    from kvsim.validate.models import default_model, resolve_model

    return resolve_model(name) if name else default_model(device.value)


def gpu_spec(hw: str | None):
    if not hw:
        return None
    # lazy: CLI start-up
    from kvsim.hardware import load_system

    return load_system(hw).gpu


def run_benchmarks(device: Device, model: str | None, quick: bool, hw: str | None, threads: int | None, wait_quiet: str, cmd: str):
    wait_s = parse_duration_s(wait_quiet, "--wait-quiet", allow_zero=True)
    check_device(device, cmd)
    # lazy: CLI start-up
    from kvsim.validate.cpuenv import wait_quiet as _wait
    from kvsim.validate.runner import run_benchmarks

    spec, gpu = default_model(model, device), gpu_spec(hw)  # (bad names fail before any waiting or timing)
    if wait_s > 0:
        _wait(wait_s, log=lambda s: print(s, file=sys.stderr))
    return run_benchmarks(device.value, spec, quick=quick, gpu_spec=gpu, threads=threads,
                          command="kvsim validate " + " ".join(argv_after("validate") or [cmd]))


def argv_after(word: str) -> list[str]:
    """The command line after ``word`` (for the record in results files)."""
    argv = sys.argv
    return argv[argv.index(word) + 1:] if word in argv else []


HW_MARK = "# Local device spec written by `kvsim validate`"
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite --out and its companion files (X.hw.yaml, X.results.json) even if kvsim did not write them")]


def kvsim_wrote(path: Path, json_kind: str | None = None) -> bool:
    """Whether the existing ``path`` looks like a file ``kvsim validate`` writes: the local hw
    YAML (its header), a calibration YAML (``kind: calibration``), a results JSON (kernel
    timings, or an e2e report; ``json_kind`` "e2e" or "kernels": only that one)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
        if path.name.endswith(".hw.yaml"):
            return head.startswith(HW_MARK)
        if path.suffix in (".yaml", ".yml"):
            return head.startswith("kind: calibration\n")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return False
        kernels, e2e = "kernels" in data, data.get("kind") == "kvsim-validate-e2e"
        return {"kernels": kernels, "e2e": e2e}.get(json_kind, kernels or e2e)
    except (OSError, ValueError):
        return False


def check_outputs(main: str | Path | None, companions: list[Path], force: bool | None,
                  json_kind: str | None = None) -> None:
    """Before measuring (minutes): every output can be written, and no companion file kvsim
    derived from --out (a name the user never gave) would replace a file kvsim did not write, nor
    would --out itself unless ``force`` (None: the command has no --force); ``json_kind``: --out
    may replace only a results JSON of that kind (an e2e report never replaces kernel timings)."""
    # lazy: CLI start-up
    from kvsim.fileio import OutputError, check_output_file, check_writable_dir

    if main is None:
        check_writable_dir(".", "--out (default: the current directory)")
    else:
        p = check_output_file(main, "--out")
        if p.exists() and not force and not kvsim_wrote(p, json_kind):
            what = (f"holds another kind of result (not {json_kind})" if json_kind and kvsim_wrote(p)
                    else "was not written by kvsim validate")
            raise OutputError(f"--out {p}: exists and {what}; move it away or choose another "
                              f"--out{'' if force is None else ', or pass --force'}")
    for c in companions:
        check_output_file(c, "--out")
        if c.exists() and not force and not kvsim_wrote(c):
            raise OutputError(f"{c} (derived from --out) exists and was not written by kvsim; "
                              "move it away, choose another --out, or pass --force")


def write_hw(res, path: Path) -> Path:
    # lazy: CLI start-up
    from kvsim.fileio import staged
    from kvsim.hardware import GPUSpec
    from kvsim.validate.localhw import write_spec_yaml

    spec = GPUSpec.model_validate(res.measured_gpu or res.nominal_gpu)
    note = (HW_MARK + " (use with --hw this-file).\n"
            + ("# CPU: the peaks below are MEASURED best cases, not datasheet values (see notes).\n" if res.measured_gpu else ""))
    with staged(path) as tmp:
        write_spec_yaml(spec, tmp, header=note)
    return path


def wrote_note(path: Path, existed: bool) -> str:
    return f"{path} (replaced the previous one)" if existed else str(path)


def pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"
