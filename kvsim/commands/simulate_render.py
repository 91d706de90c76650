"""``kvsim simulate``'s terminal output: one method's summary as label/value pairs, several methods
as one comparison table (the JSON and files are written by :mod:`kvsim.commands.simulate`)."""

from __future__ import annotations

import sys

from kvsim.commands.common import console, fmt_bytes, fmt_num, fmt_s
from kvsim.commands.tables import print_pairs, print_rows
from kvsim.slo import fmt_duration

def stats_row(st: dict) -> str:
    return " / ".join(fmt_s(st.get(k)) for k in ("mean", "p50", "p90", "p99"))


def print_summary(s: dict) -> None:
    rows = [
        ("requests completed / rejected", f"{s['requests_completed']:,} / {s['requests_rejected']:,}"
         + (" (" + ", ".join(f"{k}: {v:,}" for k, v in s.get("rejected_reasons", {}).items()) + ")"
            if s.get("rejected_reasons") else "")
         + (f" ({s['requests_failed_in_trace']:,} failed in the trace)" if s["requests_failed_in_trace"] else "")),
        ("TTFT mean / p50 / p90 / p99", stats_row(s["ttft_s"])),
        ("TPOT mean / p50 / p90 / p99", stats_row(s["tpot_s"])),
        ("ITL mean / p50 / p90 / p99", stats_row(s["itl_s"])),
        ("E2EL mean / p50 / p90 / p99", stats_row(s["e2el_s"])),
        ("throughput (output tok/s)", fmt_num(s["throughput_output_tok_s"])),
        ("throughput (total tok/s, req/s)", f"{fmt_num(s['throughput_total_tok_s'])}, {fmt_num(s['throughput_req_s'], 3)}"),
        # (first arrival to last finish: none when no request finished, not "0.0 us")
        ("makespan", fmt_s(s["makespan_s"]) if s["requests_completed"] else "- (no request finished)"),
        ("peak KV GPU / capacity (per GPU)", f"{fmt_bytes(s['peak_kv_gpu_bytes'])} / {fmt_bytes(s['kv_gpu_capacity_bytes'])}"
         + (f" ({s['kv_gpu_capacity_tokens']:,} tokens of uncompressed KV)" if s.get("kv_gpu_capacity_tokens") else "")),
        ("peak KV host / capacity" + (" (per decode instance)" if s.get("disagg") else " (per replica)"
                                      if (s.get("replicas") or 1) > 1 else ""),
         f"{fmt_bytes(s['peak_kv_host_bytes'])} / {fmt_bytes(s['kv_host_capacity_bytes'])}"),
        ("preemptions (requests preempted)", f"{s['preemptions']:,} ({s['requests_preempted']:,})"),
        ("prefix-cached prompt tokens", f"{s['cached_prompt_tokens']:,}"),
    ]
    if s.get("preempted_kv_tokens"):
        rows.insert(-1, ("KV tokens freed by preemption (found cached on return)",
                         f"{s['preempted_kv_tokens']:,} ({s['preempted_kv_tokens_found_cached']:,})"))
    if s.get("goodput_req_s") is not None:
        rows.append(("goodput (req/s, fraction)", f"{fmt_num(s['goodput_req_s'], 3)}, {s['goodput_fraction']:.3f}"))
    if s.get("slo"):
        rows.append(("SLO " + s["slo"]["percentile"], slo_cell(s["slo"])))
    load = s.get("load") or {}
    if load:
        busy = load.get("gpu_busy_fraction")
        rows.append(("offered / served load (req/s)", f"{fmt_num(load.get('offered_req_s'), 3)} / {fmt_num(load.get('served_req_s'), 3)}"))
        rows.append(("GPU busy, peak KV occupancy", f"{'-' if busy is None else f'{busy * 100:.1f}%'}, "
                                                     f"{load.get('kv_gpu_peak_fraction', 0) * 100:.1f}%"))
    if s.get("expert_offload"):
        rows.append(("expert offload", s["expert_offload"]))
    tiers = s.get("kv_offload")
    if tiers:
        rows.append(("prefix entries reused: GPU", f"{tiers['gpu']['hit_rate'] * 100:.1f}% of {tiers['wanted_entries']:,}"))
        for name in ("host", "nvme"):
            if name in tiers:
                t_ = tiers[name]
                rows.append((f"{name} tier: hit rate, loaded / stored", f"{t_['hit_rate'] * 100:.1f}%, "
                             f"{fmt_bytes(t_['bytes_loaded'])} / {fmt_bytes(t_['bytes_stored'])}"))
                rows.append((f"{name} tier: load time ({tiers.get('load', 'async')}), TTFT saved (est.)",
                             f"{fmt_s(t_['load_time_s'])}, {fmt_s(t_['ttft_saved_est_s'])}"))
    sim = s.get("sim", {})
    rows.append(("simulated steps / wall time", f"{sim.get('steps', 0):,} / {sim.get('wall_s', 0):.2f} s"))
    dis = s.get("disagg")
    if dis:
        rows.append(("disaggregated: prefill / decode instances",
                     f"{dis['prefill_instances']} x {dis['prefill_hw']} TP{dis['prefill_tp']} / "
                     f"{dis['decode_instances']} x {dis['decode_hw']} TP{dis['decode_tp']}"))
        rows.append(("KV link (lanes, bandwidth)", f"{dis['kv_link']} ({dis['kv_link_lanes']}, "
                                                   f"{fmt_bytes(dis['kv_link_bw_bytes_per_s'])}/s)"))
        rows.append(("KV moved (total, mean per request)", f"{fmt_bytes(dis['kv_transfer_bytes_total'])}, "
                                                           f"{fmt_bytes(dis['kv_transfer_bytes_mean'] or 0.0)}"))
        rows.append(("KV transfer mean / p50 / p90 / p99", stats_row(dis["kv_transfer_s"])))
        rows.append(("KV transfer wait mean / p50 / p90 / p99", stats_row(dis["kv_transfer_wait_s"])))
    print_pairs(console(), f"{s['model']} on {s['hw']} - {s['method']}, trace {s['trace']}", rows)
    if load.get("hint"):
        print(f"hint: {load['hint']}", file=sys.stderr)
    for n in s.get("notes", []):
        if n != s.get("trace_notice"):
            print(f"note: {n}", file=sys.stderr)


def slo_cell(v: dict) -> str:
    """``"met: TTFT 1.200 s <= 2 s, ITL 80.00 ms <= 100 ms"`` of a :func:`kvsim.slo.verdict`."""
    parts = [f"{c['metric'].upper()} {'-' if c['value_s'] is None else fmt_s(c['value_s'])} "
             f"{'<=' if c['met'] else '>'} {fmt_duration(c['bound_s'])}"
             + (" (its rank falls among the rejected requests)" if c.get("among_rejected") else "") for c in v["checks"]]
    rej = v.get("rejected")
    if rej and rej["requests"] and not rej["met"]:  # (a rejected request misses every bound: kvsim.slo)
        parts.append(f"{rej['requests']:,} rejected > {rej['allowed']:.3g} allowed")
    return ("met: " if v["met"] else "missed: ") + ", ".join(parts)


#: the method comparison's columns (vLLM metric names; E2EL: end-to-end latency)
TABLE_HEADERS = ("method", "done", "rej", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99", "E2EL p50", "out tok/s",
                 "peak KV GPU", "peak KV host", "preempt")


def print_comparison(summaries: list[dict]) -> None:
    s0 = summaries[0]
    full = next((s for s in summaries if s["method"] == "full"), None)
    # full KV first (the baseline), then by median end-to-end latency, fastest first
    summaries = sorted(summaries, key=lambda s: (s is not full, _or_inf(s["e2el_s"]["p50"])))
    cols = list(TABLE_HEADERS)
    if full is not None:
        cols.insert(8, "vs full")
    good = any(s.get("goodput_req_s") is not None for s in summaries)
    if good:
        cols.append("goodput")
    slo = any(s.get("slo") for s in summaries)
    if slo:
        cols.append(f"SLO {next(s['slo']['percentile'] for s in summaries if s.get('slo'))}")
    rows = []
    for s in summaries:
        row = [s["method"], f"{s['requests_completed']:,}", f"{s['requests_rejected']:,}", fmt_s(s["ttft_s"]["p50"]),
               fmt_s(s["ttft_s"]["p99"]), fmt_s(s["tpot_s"]["p50"]), fmt_s(s["itl_s"]["p99"]), fmt_s(s["e2el_s"]["p50"]),
               fmt_num(s["throughput_output_tok_s"]), fmt_bytes(s["peak_kv_gpu_bytes"]), fmt_bytes(s["peak_kv_host_bytes"]),
               f"{s['preemptions']:,}"]
        if full is not None:
            row.insert(8, "-" if s is full else f"{_change(s['e2el_s']['p50'], full['e2el_s']['p50'])} E2EL, "
                                                 f"{_change(s['throughput_output_tok_s'], full['throughput_output_tok_s'])} tok/s")
        if good:
            row.append("-" if s.get("goodput_fraction") is None else f"{s['goodput_fraction']:.3f}")
        if slo:
            row.append("-" if not s.get("slo") else ("met" if s["slo"]["met"] else "missed"))
        rows.append(row)
    print_rows(console(), f"{s0['model']} on {s0['hw']}, trace {s0['trace']}"
               + (" (vs full: change of median E2EL and output tok/s against full KV)" if full else ""), cols, rows)
    hints = {s["method"]: (s.get("load") or {}).get("hint") for s in summaries}
    if any(hints.values()):
        if len(set(hints.values())) == 1:
            print(f"hint: {next(iter(hints.values()))}", file=sys.stderr)
        else:
            for m, h in hints.items():
                if h:
                    print(f"hint ({m}): {h}", file=sys.stderr)
    # notes: once when every method has it (the trace's, the hardware's), else named by method
    notes = {s["method"]: [n for n in s.get("notes", []) if n != s.get("trace_notice")] for s in summaries}
    shared = [n for n in next(iter(notes.values())) if all(n in ns for ns in notes.values())]
    for n in shared:
        print(f"note: {n}", file=sys.stderr)
    for m, ns in notes.items():
        for n in ns:
            if n not in shared:
                print(f"note ({m}): {n}", file=sys.stderr)


def _or_inf(x: float | None) -> float:
    return float("inf") if x is None else x


def _change(x: float | None, base: float | None) -> str:
    """Signed relative change of ``x`` against ``base`` ("-" when either is missing or base is 0)."""
    if x is None or not base:
        return "-"
    return f"{(x / base - 1) * 100:+.0f}%"
