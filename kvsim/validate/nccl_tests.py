"""Measured all-reduce of a node from nccl-tests ``all_reduce_perf`` output.

A PCIe-only server's NCCL bus bandwidth past two GPUs depends on its PCIe topology (switches,
root complexes, sockets), which no datasheet states (kvsim's datasheet form is within 5% at TP 2
on both PCIe servers with measured tables and 2.3-13x too fast at TP 4-8:
:attr:`kvsim.costmodel.deployment.Deployment.allreduce_note`). nccl-tests
(github.com/NVIDIA/nccl-tests) measures it in a minute; this module reads its text output and
fits the same two numbers per group size kvsim fits on NVIDIA's tables
(:func:`kvsim.validate.kernel_fit.fit_allreduce`): ``latency_s`` and ``bus_bw_bytes_per_s`` of
``latency + ring_bytes / bus_bw`` with ``ring_bytes = 2 (g-1)/g * M``.

Output format read (nccl-tests ``src/common.cu``; one row per message size)::

    #  Rank  0 Group  0 Pid  4242 on node device  0 [0x18] NVIDIA L40S
    #       size         count      type   redop    root     time   algbw   busbw #wrong     time ...
               8             2     float     sum      -1    10.73    0.00    0.00      0    10.52 ...

``time`` is microseconds (out-of-place columns are used), ``size`` bytes. The group size is the
number of ``Rank`` lines, checked against the rows' ``busbw / algbw`` (``2 (g-1)/g`` for an
all-reduce, nccl-tests doc/PERFORMANCE.md), which also tells an all-reduce from the other tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvsim.errors import ConfigError
from kvsim.fileio import describe
from kvsim.hardware import AllReduceFit
from kvsim.validate.kernel_tables import KernelTable
from kvsim.validate.kernels import BF16_BYTES

_RANK = re.compile(r"^#\s*Rank\s+\d+\s+Group\s+\d+")
_HEADER = re.compile(r"^#\s*nThread\s")  # the first line of every run
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# size count type redop root time algbw busbw (out-of-place)
_ROW = re.compile(rf"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\b")
_MIN_ALGBW_GBPS = 0.5  # rows slower than this print busbw/algbw with too few digits to check the ratio
_WRONG = re.compile(_ROW.pattern + r"\s+(\d+)\b")  # a result row and its out-of-place #wrong
_FAILED = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)\s+FAILED")
# the fit's bounds (kernel_fit.fit_allreduce: latency 0-10 ms, bus bandwidth 0.1-100,000 GB/s): a fit on one
# of them did not come from the data
_LATENCY_MAX_S, _BUSBW_MIN, _BUSBW_MAX = 1e-2, 1e8, 1e14


@dataclass(frozen=True)
class NcclRun:
    """One ``all_reduce_perf`` run: its group size and its rows."""

    path: str
    gpus: int
    message_bytes: np.ndarray
    latency_s: np.ndarray


def parse_nccl_file(path: Path | str, gpus: int | None = None) -> list[NcclRun]:
    """Every ``all_reduce_perf`` run in a file: runs appended one after another (``for g in 2 4 8;
    do all_reduce_perf -g $g ...; done > log``) are split at their ``# nThread`` header lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"{path}: {describe(err)}") from None
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if _HEADER.match(line) and any(_ROW.match(x) for x in blocks[-1]):
            blocks.append([])
        blocks[-1].append(line)
    many = len(blocks) > 1
    return [_parse_run(f"{path} (run {i + 1})" if many else str(path), b, gpus) for i, b in enumerate(blocks)]


def parse_nccl_tests(path: Path | str, gpus: int | None = None) -> NcclRun:
    """The rows of a file holding one ``all_reduce_perf`` run (see :func:`parse_nccl_file`)."""
    runs = parse_nccl_file(path, gpus)
    if len(runs) > 1:
        raise ConfigError(f"{path}: {len(runs)} runs in one file (use parse_nccl_file)")
    return runs[0]


def _parse_run(path: str, lines: list[str], gpus: int | None) -> NcclRun:
    ranks = sum(1 for line in lines if _RANK.match(line))
    rows = [m.groups() for m in map(_ROW.match, lines) if m]
    if not rows:
        raise ConfigError(f"{path}: no nccl-tests result rows (size count type redop root time algbw busbw ...); "
                          "give the text output of all_reduce_perf")
    wrong = sum(int(m[_WRONG.groups]) for m in map(_WRONG.match, lines) if m)  # (its last group)
    failed = [int(m.group(1)) for m in map(_FAILED.match, lines) if m]
    if wrong or any(failed):
        raise ConfigError(f"{path}: the run failed its own check ({wrong} wrong values in the #wrong column"
                          + (f", 'Out of bounds values : {max(failed)} FAILED'" if any(failed) else "")
                          + "): its times are not an all-reduce kvsim can fit")
    size = np.array([float(r[0]) for r in rows])
    time_us = np.array([float(r[5]) for r in rows])
    algbw = np.array([float(r[6]) for r in rows])
    busbw = np.array([float(r[7]) for r in rows])
    g = gpus if gpus is not None else ranks
    if g < 2:
        raise ConfigError(f"{path}: {'no Rank lines' if not ranks else f'{ranks} GPU'} in the output: an all-reduce "
                          "needs 2 or more GPUs (give --gpus N when the run printed no device list)")
    checked = algbw >= _MIN_ALGBW_GBPS
    if checked.any():
        ratio = float(np.median(busbw[checked] / algbw[checked]))
        expect = 2.0 * (g - 1) / g
        if abs(ratio / expect - 1.0) > 0.05:
            raise ConfigError(f"{path}: busbw / algbw is {ratio:.3f}, an all-reduce over {g} GPUs gives {expect:.3f}: "
                              "not all_reduce_perf output, or another GPU count (--gpus)")
    if not (np.isfinite(time_us) & (time_us > 0)).all() or not np.isfinite(size).all():
        raise ConfigError(f"{path}: a row's time or size is not a finite positive number")
    return NcclRun(path, int(g), size, time_us * 1e-6)


def fit_nccl_runs(runs: list[NcclRun]) -> list[AllReduceFit]:
    """One NCCL :class:`AllReduceFit` per group size (runs of one size are pooled)."""
    if not runs:
        raise ConfigError("no nccl-tests output given")
    groups = np.concatenate([np.full(len(r.latency_s), r.gpus, dtype=np.float64) for r in runs])
    nbytes = np.concatenate([r.message_bytes for r in runs])
    table = KernelTable("nccl-tests", "allreduce", {
        "algo": np.array(["nccl"] * len(groups)), "num_gpus": groups, "message_elems": nbytes / BF16_BYTES,
        "latency_ms": np.concatenate([r.latency_s for r in runs]) * 1e3})
    # lazy: scipy (least squares) only when fitting
    from kvsim.validate.kernel_fit import fit_allreduce

    fits = fit_allreduce(table, np.ones(len(table), dtype=bool))
    missing = sorted({r.gpus for r in runs} - {f.group for f in fits})
    # (several runs of one GPU count are pooled into one fit)
    if missing:
        raise ConfigError(f"fewer than 2 message sizes for {', '.join(map(str, missing))} GPUs: run all_reduce_perf "
                          "over a range of sizes (-b 8 -e 1G -f 2)")
    for f in fits:
        if (f.latency_s >= _LATENCY_MAX_S * (1 - 1e-6) or f.bus_bw_bytes_per_s <= _BUSBW_MIN * (1 + 1e-6)
                or f.bus_bw_bytes_per_s >= _BUSBW_MAX * (1 - 1e-6)):
            raise ConfigError(f"{f.group} GPUs: the fit reached its limit (latency {f.latency_s * 1e6:.4g} us, bus bandwidth "
                              f"{f.bus_bw_bytes_per_s / 1e9:.4g} GB/s; the fit allows 0-10,000 us and 0.1-100,000 GB/s): "
                              "the times are not an all-reduce of this form (check the file, its units and --gpus)")
    return fits


def fit_errors(fit: AllReduceFit, run_bytes: np.ndarray, run_s: np.ndarray) -> np.ndarray:
    """Signed error of the fitted form on measured rows (in-sample: the fit saw them)."""
    ring = 2.0 * (fit.group - 1) / fit.group * run_bytes
    return (fit.latency_s + ring / fit.bus_bw_bytes_per_s) / run_s - 1.0


def allreduce_yaml(fits: list[AllReduceFit], sources: list[str]) -> str:
    """The ``allreduce:`` block of a system file."""
    lines = [f"# NCCL all-reduce measured with nccl-tests all_reduce_perf ({', '.join(sources)});",
             "# fitted by `kvsim hardware allreduce`: latency_s + 2(g-1)/g * bytes / bus_bw_bytes_per_s per call",
             "allreduce:"]
    for f in sorted(fits, key=lambda f: f.group):
        lines += [f"- algo: {f.algo}", f"  group: {f.group}", f"  latency_s: {f.latency_s:.4g}",
                  f"  bus_bw_bytes_per_s: {f.bus_bw_bytes_per_s:.4g}"]
    return "\n".join(lines) + "\n"


__all__ = ["NcclRun", "parse_nccl_file", "parse_nccl_tests", "fit_nccl_runs", "fit_errors", "allreduce_yaml"]
