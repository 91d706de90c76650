"""Tried, not shipped: attention defaults fitted per vLLM attention-kernel family.

    python benchmarks/attention_family_logo.py

vLLM picks the attention kernel by compute capability (FlashAttention-3 on sm90, FlashAttention-2
on sm80 / sm89 / sm120). This fits the decode and prefill attention defaults on a family's other
GPUs only and reports (median / p90 |error|, bias) on the GPU left out, and on the RTX PRO 6000
Server (FA2, never fitted) from the FA2 family (A100 + L40S) against the shipped one fit on all
four GPUs. Numerics only (about 10 s); the numbers are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import numpy as np

from kvsim.validate import kernel_report as kr
from kvsim.validate.kernel_fit import fit_data, fit_op
from kvsim.validate.kernel_tables import FITTED_TABLES, load_table
from kvsim.validate.kernels import error_stats, price_table

OPS = ("attn_decode", "attn_prefill")


def _report(target: str, train: list[str], base) -> str:
    out = []
    for op in OPS:
        data = []
        for ts in train:
            system = kr._datasheet(ts, base)
            data.append(fit_data(load_table(ts, op), system, np.flatnonzero(kr._usable(op, ts, system)[0])))
        system = kr._datasheet(target, base.with_overrides({op: fit_op(op, data)}))
        rows, _ = kr._usable(op, target, system)
        s = error_stats(price_table(load_table(target, op), system).error[rows])
        out.append(f"{op} {s.median_abs * 100:.1f}% / {s.p90_abs * 100:.1f}% ({s.bias * 100:+.1f}%)")
    return "; ".join(out)


def main() -> None:
    for target, train in (("a100_sxm", ["l40s"]), ("l40s", ["a100_sxm"]), ("h100_sxm", ["h200_sxm"]),
                          ("h200_sxm", ["h100_sxm"])):
        base = kr.shared_defaults([t for t in FITTED_TABLES if t != target])  # the other op classes: LOGO defaults
        print(f"{target} from {'+'.join(train)}: {_report(target, train, base)}")
    base = kr.shared_defaults(list(FITTED_TABLES))
    print(f"rtx_pro_6000_server from a100_sxm+l40s: {_report('rtx_pro_6000_server', ['a100_sxm', 'l40s'], base)}")
    print(f"rtx_pro_6000_server from all four (shipped): {_report('rtx_pro_6000_server', list(FITTED_TABLES), base)}")


if __name__ == "__main__":
    main()
