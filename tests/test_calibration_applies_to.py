"""--calibration fitted on another device: a note, on every command that takes the file."""

from pathlib import Path

from kvsim.costmodel.calibration import Calibration, calibration_mismatch
from kvsim.costmodel.deployment import build_deployment
from kvsim.hardware import load_system

ROOT = Path(__file__).resolve().parent.parent
CPU_CAL = ROOT / "kvsim" / "validate" / "results" / "cpu-tiny-llama.calibration.yaml"
ENGINE = ROOT / "kvsim" / "hardware" / "engines" / "vllm-sync.yaml"


def _cal(applies_to: str, hw: str = "") -> Calibration:
    return Calibration(device="dev", applies_to=applies_to, efficiencies={}, hw=hw)


def test_mismatch_rule():
    """applies_to names the system or its GPU, by name or alias, in any spelling: no note;
    'any system' or empty: no note; another device: a note naming both and the file's --hw."""
    a100 = load_system("a100")
    for ok in ("a100-80g", "A100-SXM4-80GB", "a100", "A100 SXM4 80GB", "", "any system"):
        assert calibration_mismatch(a100, _cal(ok)) is None, ok
    note = calibration_mismatch(a100, _cal("h100", hw="mine.hw.yaml"), "c.yaml")
    assert note.startswith("--calibration c.yaml was fitted on h100 (dev), not on a100-80g's A100-SXM4-80GB")
    assert note.endswith("(use it with --hw mine.hw.yaml)")


def test_deployment_and_simulation_carry_the_note():
    """The CPU calibration shipped with the project applied to an A100: the deployment's notes and
    simulate's summary notes say so; the engine profile (any system) adds none."""
    dep = build_deployment("a100", "llama-3.1-8b", calibration=str(CPU_CAL))
    assert any("was fitted on local-" in n for n in dep.notes)
    assert build_deployment("a100", "llama-3.1-8b", calibration=str(ENGINE)).notes == []
    from kvsim.methods import make_method
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces import load_trace

    res = simulate(dep, make_method("full", dep), load_trace("synthetic-fixed", num_requests=2, seed=0), SimConfig())
    assert any("was fitted on local-" in n for n in res.summary["notes"])
