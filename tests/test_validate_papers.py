"""`kvsim validate papers`: a batch run kvsim cannot serve is no prediction, never a 0."""

from kvsim.validate.papers import Conditions, Row, batch_run, evaluate


def _flexgen(util: float) -> Conditions:
    # H2O Table 2 (METHODS.md §2 row 12): T4, OPT-6.7B fp16, 512 + 1024 tokens, B = 1 under FlexGen
    return Conditions(hw="t4", model="opt-6.7b", method="full", context=1536, batch=1, weight_dtype="fp16",
                      kv_dtype="fp16", prompt=512, output=1024, gpu_memory_utilization=util)


def test_a_request_kvsim_rejects_is_no_prediction_and_says_why():
    """OPT-6.7B's fp16 weights (13.3 GB) leave a 16 GB T4 too little KV for 1,536 tokens (32 layers x
    2 x 4096 x 2 B = 512 KiB a token: 0.8 GB) at vLLM's 0.9 cap: the row has no number (it printed
    0 tok/s, -100%) and its note says what kvsim rejected; at FlexGen's whole GPU (1.0) it runs."""
    value, why = batch_run(_flexgen(0.9))
    assert value is None and "serves 0 of 1 requests (1 gpu_memory" in why
    row = Row(id="x", row=12, paper="H2O", quantity="q", kind="batch_run", published=16.9, conditions=_flexgen(0.9),
              source="s", note="n")
    r = evaluate(row)
    assert r.predicted is None and r.error is None and r.within_target is None and r.note.startswith("n; NO PREDICTION")
    value, why = batch_run(_flexgen(1.0))
    assert why == "" and 10.0 < value < 40.0  # (tokens/s of one sequence: 1024 tokens / makespan)


def test_readme_cpu_calibration_numbers_are_what_the_command_prints():
    """README's CPU kernels bullet quotes `kvsim validate calibrate --from cpu-tiny-llama.json`:
    before calibration (default efficiencies), 5-fold cross-validation and in-sample medians. A
    change of the defaults (the GPU-fidelity refit moved 'before' from 35 % to 38 %) must show up
    in the README, so the quoted numbers are recomputed here."""
    import re
    from pathlib import Path

    from kvsim.validate.calibrate import make_calibration
    from kvsim.validate.compare import rows_from_calibration, summarize
    from kvsim.validate.results import load_results

    root = Path(__file__).resolve().parent.parent
    cal, _, _ = make_calibration(load_results(root / "kvsim" / "validate" / "results" / "cpu-tiny-llama.json"))
    s = summarize(rows_from_calibration(cal))
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    before = re.search(r"defaults before calibration: median (\d+) %, p90 (\d+) %", readme)
    cv = re.search(r"5-fold cross-validation median \|error\| ([\d.]+) %, p90 (\d+) %", readme)
    ins = re.search(r"on the kernels the fit used: median ([\d.]+) %", readme)
    assert before and cv and ins
    assert int(before[1]) == round(100 * s.median_before) and int(before[2]) == round(100 * s.p90_before)
    assert float(cv[1]) == round(100 * s.median_cv, 1) and int(cv[2]) == round(100 * s.p90_cv)
    assert float(ins[1]) == round(100 * s.median_after, 1)
