"""Measured GPU kernel latencies shipped with kvsim (an extract of NVIDIA's aiconfigurator-core).

``kvsim/validate/data/gpu_kernels/<table system>/<op>.csv.gz``; provenance, license and the
meaning of every column in ``PROVENANCE.md`` next to them (written by
``tools/extract_gpu_kernels.py``). Read with the standard library: no pandas, no pyarrow.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kvsim.errors import ConfigError
from kvsim.hardware import catalog as hardware_catalog

TABLE_DIR = Path(__file__).parent / "data" / "gpu_kernels"

#: measured system in the tables -> the kvsim system (node) it was measured on
SYSTEM_OF_TABLE = {
    "a100_sxm": "a100-80g",
    "h100_sxm": "h100",
    "h200_sxm": "h200",
    "l40s": "l40s",
    "b200_sxm": "b200",
    "rtx_pro_6000_server": "rtx-pro-6000",
    "gb200": "gb200",
}
#: systems kvsim fits profiles on; the others are datasheet-only checks
FITTED_TABLES = ("a100_sxm", "h100_sxm", "h200_sxm", "l40s")

#: op class reported -> table file
OP_FILES = {
    "gemm": "gemm",
    "attn_prefill": "context_attention",
    "attn_decode": "generation_attention",
    "allreduce": "allreduce",
}
#: op class reported -> the roofline op class (kvsim.hardware.spec.OP_CLASSES) it measures
ROOFLINE_OP = {"gemm": "gemm", "attn_prefill": "attn_prefill", "attn_decode": "attn_decode", "allreduce": "collective"}
#: op classes only checked, never fitted on (op -> table file): MLA decode attention, priced with
#: the efficiencies fitted on GQA decode attention (roofline op ``attn_decode``)
CHECK_OP_FILES = {"attn_decode_mla": "generation_mla"}
_TABLE_FILES = {**OP_FILES, **CHECK_OP_FILES}  # every op class with a table -> its file


def has_table(table_system: str, op: str) -> bool:
    """Was ``op`` measured on ``table_system``? (Every fitted op was; MLA not on A100.)"""
    name = _TABLE_FILES.get(op)
    return name is not None and (TABLE_DIR / table_system / f"{name}.csv.gz").is_file()


@dataclass(frozen=True)
class KernelTable:
    """One measured op class on one system: column name -> array, and ``latency_s``."""

    table_system: str
    op: str
    columns: dict[str, np.ndarray]

    @property
    def latency_s(self) -> np.ndarray:
        return self.columns["latency_ms"] * 1e-3

    def __len__(self) -> int:
        return len(self.columns["latency_ms"])

    def subset(self, mask: np.ndarray) -> "KernelTable":
        return KernelTable(self.table_system, self.op, {k: v[mask] for k, v in self.columns.items()})


@lru_cache(maxsize=None)
def load_table(table_system: str, op: str) -> KernelTable:
    """The measured rows of ``op`` (a key of :data:`OP_FILES`) on ``table_system``."""
    if table_system not in SYSTEM_OF_TABLE:
        raise ConfigError(f"no measured kernel table for '{table_system}' (choices: {', '.join(SYSTEM_OF_TABLE)})")
    if op not in _TABLE_FILES:
        raise ConfigError(f"unknown op class '{op}' (choices: {', '.join(_TABLE_FILES)})")
    if not has_table(table_system, op):
        raise ConfigError(f"no measured {op} table for '{table_system}'")
    path = TABLE_DIR / table_system / f"{_TABLE_FILES[op]}.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values = [r[j] for r in rows]
        columns[name] = np.array(values) if name == "algo" else np.array(values, dtype=np.float64)
    return KernelTable(table_system, op, columns)


def table_of_system(name: str) -> str:
    """Table system of a kvsim system name or table name (``a100-80g`` or ``a100_sxm``)."""
    if name in SYSTEM_OF_TABLE:
        return name
    shipped = hardware_catalog("system").get(name.lower())  # an alias (a100 -> a100-80g)
    canonical = shipped.name if shipped is not None else name
    for table, system in SYSTEM_OF_TABLE.items():
        if system == canonical:
            return table
    raise ConfigError(f"no measured kernel table for '{name}' (choices: {', '.join(SYSTEM_OF_TABLE.values())})")
