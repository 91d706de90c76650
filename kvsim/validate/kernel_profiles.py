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

from kvsim.fileio import atomic_write, check_replaceable, check_writable_dir
from kvsim.hardware import AllReduceFit, ProfileSpec
from kvsim.validate.kernel_tables import ROOFLINE_OP, SYSTEM_OF_TABLE


def _round(x: float | bool) -> float | bool:
    return x if isinstance(x, bool) else float(f"{x:.4g}")


def profile_of_fit(table_system: str, eff: dict[str, dict[str, float]], allreduce: list[AllReduceFit],
                   held_out_rows: list[dict]) -> ProfileSpec:
    system = SYSTEM_OF_TABLE[table_system]
    errors = {ROOFLINE_OP[r["op"]]: {"rows": r["rows"], "median_abs": _round(r["median_abs"]), "p90_abs": _round(r["p90_abs"]),
                                    "bias": _round(r["bias"]), "protocol": "held-out: fit on half the shapes, reported on the other half"}
              for r in held_out_rows if r["rows"] and r["op"] in ROOFLINE_OP}  # (check-only ops: not a profile's error)
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


_HEADER = "# Measured profile of the "


def profile_targets(directory: Path | str, table_systems: list[str]) -> list[Path]:
    """The files ``--write-profiles DIR`` will write (``DIR/<system>.yaml``), checked before any fit:
    the folder can be written, and each file is absent or an earlier profile written by this
    command (anything else, e.g. a user's own profile of the same name, is never replaced)."""
    folder = check_writable_dir(directory, "--write-profiles")
    return [check_replaceable(folder / f"{SYSTEM_OF_TABLE[ts]}.yaml", _HEADER, "--write-profiles",
                              "was not written by --write-profiles") for ts in table_systems]


def write_profile(directory: Path, table_system: str, eff: dict[str, dict[str, float]], allreduce: list[AllReduceFit],
                  held_out_rows: list[dict]) -> Path:
    """Write the profile of ``table_system`` into ``directory`` (:func:`profile_targets` decides
    whether its file may be replaced)."""
    spec = profile_of_fit(table_system, eff, allreduce, held_out_rows)
    data = spec.model_dump(exclude_defaults=False)
    data["allreduce"] = [{k: v for k, v in a.items() if v is not None} for a in data["allreduce"]]
    header = (_HEADER + spec.system + " node, written by `kvsim validate kernels --protocol held-out "
              "--write-profiles`.\n# Do not edit by hand: rerun the command. measured_error is held-out (see source).\n")
    (path,) = profile_targets(directory, [table_system])
    return atomic_write(path, header + yaml.safe_dump(data, sort_keys=False))
