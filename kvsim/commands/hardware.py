"""``kvsim hardware new gpu|system NAME``: a commented starting file for your own hardware;
``kvsim hardware allreduce LOG...``: its measured all-reduce from nccl-tests output."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsim.errors import ConfigError
from kvsim.fileio import OutputError, atomic_write, refuse_inputs

app = typer.Typer(help="Your own hardware: starting files for a GPU or a multi-GPU system.", no_args_is_help=True)


class Kind(str, Enum):
    gpu = "gpu"
    host = "host"
    system = "system"


@app.command("new")
def new_cmd(
    kind: Annotated[Kind, typer.Argument(case_sensitive=False, help="gpu, host or system")],
    name: Annotated[str, typer.Argument(help="the name `--hw` and reports will show")],
    out: Annotated[Optional[Path], typer.Option("--out", help="file to write (default: print to stdout)")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="copy the numbers of this catalog GPU, host or system")] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="system: a GPU name or a GPU YAML path (relative to --out)")] = None,
    num_gpus: Annotated[Optional[int], typer.Option("--num-gpus", min=1, help="system: GPUs in the node")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="system: a host CPU name or a host YAML path")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing --out file")] = False,
) -> None:
    """Write a commented GPU, host or system YAML that loads as is once its null numbers are filled in."""
    # lazy: CLI start-up (the hardware catalog is read only by this command)
    from kvsim.catalog import spec_key
    from kvsim.hardware import catalog, get, names, profile_of
    from kvsim.hardware.templates import gpu_template, host_template, system_template

    if not name.strip():
        raise ConfigError("NAME: empty name")
    if out is not None and out.is_dir():
        raise OutputError(f"--out {out}: is a directory (expected a file name)")
    if out is not None and out.exists() and not force:
        raise OutputError(f"--out {out}: file exists (use --force to overwrite it)")
    if kind is Kind.host:
        if gpu is not None or num_gpus is not None or host is not None:
            raise ConfigError("--gpu, --num-gpus and --host describe a system: use `kvsim hardware new system`")
        text = host_template(name, get("host", like) if like else None, links=names("link"))
    elif kind is Kind.gpu:
        if gpu is not None or num_gpus is not None or host is not None:
            raise ConfigError("--gpu, --num-gpus and --host describe a system: use `kvsim hardware new system`")
        like_gpu = None
        if like:  # a GPU name, or a system's name or alias (a100 -> the a100-80g node's GPU), as --hw takes
            node = catalog("system").get(like.strip().lower()) if like.strip().lower() not in catalog("gpu") else None
            like_gpu = get("gpu", node.gpu if node is not None else like)
        text = gpu_template(name, like_gpu, links=names("link"))
        if like_gpu is not None:
            measured = sorted({sy.name for sy in catalog("system").values()
                               if get("gpu", sy.gpu) is like_gpu and profile_of(sy.name) is not None})
            if measured:
                typer.echo(f"note: the measured kernel profile of {', '.join(measured)} is not copied (it was fitted on "
                           f"that node's kernels): a GPU file uses the datasheet model (`kvsim list hardware` shows "
                           f"which)", err=True)
    else:
        if gpu is not None and spec_key(gpu) not in catalog("gpu") and spec_key(gpu) in catalog("system"):
            node_gpu = catalog("system")[spec_key(gpu)].gpu  # a system name or alias (a100), as --like takes it
            typer.echo(f"note: --gpu {gpu}: the GPU of the {catalog('system')[spec_key(gpu)].name} node, {node_gpu}", err=True)
            gpu = node_gpu
        _check_parts(out, gpu, host)
        like_system = get("system", like) if like else None
        text = system_template(name, like_system, gpu=gpu, num_gpus=num_gpus, host=host, hosts=names("host"))
        if like_system is not None and profile_of(like_system.name) is not None:
            typer.echo(f"note: {like_system.name}'s measured kernel profile is not copied (it was fitted on that node's "
                       "kernels): the new system uses the datasheet model until you measure it "
                       "(`kvsim list hardware` shows which)", err=True)
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write(out, text)
    check = (f"then name it in a system (`kvsim hardware new system NAME --gpu GPU --num-gpus N --host {out}`) and check "
             "that with `kvsim list hardware --hw SYSTEM_FILE`" if kind is Kind.host
             else f"then check it with `kvsim list hardware --hw {out}`")
    typer.echo(f"wrote {out}: fill in its null numbers (a required one left null is a one-line error when it loads), "
               f"{check}", err=True)


@app.command("allreduce")
def allreduce_cmd(
    logs: Annotated[list[Path], typer.Argument(help="text output of nccl-tests all_reduce_perf (one or more runs per file)")],
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=2, help="GPUs in the runs when their output lists no Rank lines")] = None,
) -> None:
    """Fit NCCL all-reduce (latency and bus bandwidth per GPU count) from nccl-tests output; print the
    `allreduce:` block to paste into your system file (PCIe-only servers past 2 GPUs need it)."""
    # lazy: CLI start-up (numpy, scipy)
    import numpy as np

    from kvsim.validate.nccl_tests import allreduce_yaml, fit_errors, fit_nccl_runs, parse_nccl_file

    runs = [run for p in logs for run in parse_nccl_file(p, gpus)]
    fits = fit_nccl_runs(runs)
    typer.echo(allreduce_yaml(fits, list(dict.fromkeys(p.name for p in logs))), nl=False)
    for f in sorted(fits, key=lambda f: f.group):
        mine = [r for r in runs if r.gpus == f.group]
        err = fit_errors(f, np.concatenate([r.message_bytes for r in mine]), np.concatenate([r.latency_s for r in mine]))
        typer.echo(f"{f.group} GPUs: {len(err)} sizes, fit error on them (in-sample) median |err| "
                   f"{np.median(np.abs(err)) * 100:.1f}%, max {np.max(np.abs(err)) * 100:.1f}%", err=True)


def _check_parts(out, gpu: str | None, host: str | None) -> None:
    """``--gpu`` / ``--host`` of a new system: a catalog name, or a file that exists (a relative path is
    relative to the ``--out`` file's folder, as the system file will read it)."""
    # lazy: CLI start-up
    from pathlib import Path

    from kvsim.hardware import catalog
    from kvsim.catalog import spec_key

    base = Path(out).parent if out is not None else Path(".")
    for flag, value, kind in (("--gpu", gpu, "gpu"), ("--host", host, "host")):
        if value is None or spec_key(value) in catalog(kind):
            continue
        p = Path(value)
        where = p if p.is_absolute() else base / p
        if value.endswith((".yaml", ".yml")) or "/" in value:
            if not where.is_file():
                raise ConfigError(f"{flag} {value}: no file {where} (a path is relative to the --out file's folder)")
            if out is not None:  # (--force replaces a file, never the part the new system reads)
                refuse_inputs(out, [where], "--out")
        else:
            raise ConfigError(f"{flag} {value}: not a {kind} in the catalog (`kvsim list hardware`) nor a YAML path")

