"""Write a measured profile (``kvsim/hardware/profiles/<system>.yaml``) from a kernel-table fit.

The profile holds the efficiencies and all-reduce costs fitted on *all* usable rows of the
system's measured tables, and the error of the same procedure fitted on half the shapes and
reported on the other half (``measured_error``, labelled held-out): the number a user can
expect on shapes the fit has not seen.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import yaml

from kvsim.fileio import atomic_write, ensure_dir
from kvsim.hardware import AllReduceFit, ProfileSpec
from kvsim.validate.kernel_tables import ROOFLINE_OP, SYSTEM_OF_TABLE


def _round(x: float | bool) -> float | bool:
    return x if isinstance(x, bool) else float(f"{x:.4g}")


def profile_of_fit(table_system: str, eff: dict[str, dict[str, float]], allreduce: list[AllReduceFit],
                   held_out_rows: list[dict]) -> ProfileSpec:
    system = SYSTEM_OF_TABLE[table_system]
    errors = {ROOFLINE_OP[r["op"]]: {"rows": r["rows"], "median_abs": _round(r["median_abs"]), "p90_abs": _round(r["p90_abs"]),
                                    "bias": _round(r["bias"]), "protocol": "held-out: fit on half the shapes, reported on the other half"}
              for r in held_out_rows if r["rows"]}
    return ProfileSpec(
        name=f"{system}-measured", system=system,
        efficiency={op: {k: _round(v) for k, v in fields.items()} for op, fields in eff.items()},
        allreduce=[a.model_copy(update={"latency_s": _round(a.latency_s), "bus_bw_bytes_per_s": _round(a.bus_bw_bytes_per_s)})
                   for a in allreduce],
        measured_error=errors,
        source=f"kvsim validate kernels --protocol held-out --write-profiles: fitted on NVIDIA aiconfigurator-core 0.12.0 "
               f"kernel tables ({table_system}; kvsim/validate/data/gpu_kernels/PROVENANCE.md), L2-resident rows excluded",
        date=_dt.date.today().isoformat(),
    )


def write_profile(directory: Path, table_system: str, eff: dict[str, dict[str, float]], allreduce: list[AllReduceFit],
                  held_out_rows: list[dict]) -> Path:
    spec = profile_of_fit(table_system, eff, allreduce, held_out_rows)
    data = spec.model_dump(exclude_defaults=False)
    data["allreduce"] = [{k: v for k, v in a.items() if v is not None} for a in data["allreduce"]]
    header = ("# Measured profile of the " + spec.system + " node, written by `kvsim validate kernels --protocol held-out "
              "--write-profiles`.\n# Do not edit by hand: rerun the command. measured_error is held-out (see source).\n")
    path = ensure_dir(directory, "--write-profiles") / f"{spec.system}.yaml"
    return atomic_write(path, header + yaml.safe_dump(data, sort_keys=False))
