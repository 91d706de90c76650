"""All-reduce on the PCIe-only servers with measured tables: the datasheet form's error by GPU count.

    python benchmarks/pcie_allreduce.py

The datasheet form is the shared defaults' (fitted on the NVLink GPUs only:
``kernel_report.shared_defaults``) applied to the link of each server; L40S and RTX PRO 6000
Server rows are those of the algorithm vLLM runs for each message (``kernel_fit.engine_rows``);
the datasheet form was fitted on no PCIe server's all-reduce. Prints the
median signed error per GPU count (negative: kvsim too fast) and the measured NCCL bus
bandwidth at the largest messages. Numerics only; the numbers are in benchmarks/RESULTS.md
(RTX PRO 6000 section) and behind ``Deployment.allreduce_note``.
"""

from __future__ import annotations

import numpy as np

from kvsim.validate import kernel_report as kr
from kvsim.validate.kernel_tables import FITTED_TABLES, load_table
from kvsim.validate.kernels import BF16_BYTES, price_table


def main() -> None:
    base = kr.shared_defaults(list(FITTED_TABLES))
    for ts in ("rtx_pro_6000_server", "l40s"):
        system = kr._datasheet(ts, base)
        rows, _ = kr._usable("allreduce", ts, system)
        table = load_table(ts, "allreduce")
        c = table.columns
        err = price_table(table, system).error
        for g in (2, 4, 8):
            sel = rows & (c["num_gpus"] == g)
            big = (c["algo"] == "nccl") & (c["num_gpus"] == g) & (c["message_elems"] * BF16_BYTES >= 2**28)
            busbw = 2 * (g - 1) / g * c["message_elems"][big] * BF16_BYTES / table.latency_s[big] / 1e9
            print(f"{ts:22s} TP {g}: median signed error {np.median(err[sel]) * 100:+6.1f}% ({int(sel.sum())} rows); "
                  f"NCCL bus bandwidth at >= 512 MiB {np.median(busbw):5.1f} GB/s")


if __name__ == "__main__":
    main()
