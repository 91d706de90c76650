"""Attention's fixed per-call and per-tile times are cycles (``OpEfficiency.reference_clock_hz``,
``GPUSpec.sm_clock_hz``, ``Efficiencies.at_clock``): the shared datasheet defaults give them at
1.98 GHz, and each GPU without a measured profile takes them x 1.98 GHz / its SM clock.

Why (benchmarks/RESULTS.md, "Per-call times in cycles"): leave-one-GPU-out decode attention with
the A100 left out was 16.9% median (kvsim too fast by 17%: the A100's 1.41 GHz SMs spend ~1.4x
the H100's time on the same per-call work); with the per-call and per-tile times in cycles 11.0%.
"""

from pathlib import Path

import pytest
import yaml

from kvsim.hardware import default_efficiencies, load_system
from kvsim.hardware.spec import GPUSpec
from kvsim.validate.kernel_fit import REFERENCE_CLOCK_HZ, datasheet_system


def test_shipped_attention_defaults_are_given_at_the_reference_clock():
    eff = default_efficiencies()
    assert eff.attn_decode.reference_clock_hz == eff.attn_prefill.reference_clock_hz == REFERENCE_CLOCK_HZ == 1.98e9
    assert eff.gemm.reference_clock_hz is None and eff.collective.reference_clock_hz is None  # launch-scale / link: not scaled


def test_at_clock_hand_computed():
    """L4 (2.04 GHz, no profile), decode attention from default.yaml:
    overhead 1.537e-5 s x 1.98 / 2.04 = 1.4918e-5 s; per tile 2.653e-8 x 1.98 / 2.04 = 2.5750e-8 s."""
    eff = default_efficiencies().at_clock(2.04e9)
    assert eff.attn_decode.overhead_s == pytest.approx(1.537e-5 * 1.98 / 2.04, rel=1e-12)
    assert eff.attn_decode.overhead_s == pytest.approx(1.4918e-5, rel=1e-4)
    assert eff.attn_decode.tile_s == pytest.approx(2.5750e-8, rel=1e-4)
    assert eff.attn_decode.reference_clock_hz is None  # resolved: plain seconds from here on
    assert eff.attn_decode.memory == default_efficiencies().attn_decode.memory  # fractions unchanged
    assert eff.gemm == default_efficiencies().gemm
    # A100 clock (1.41 GHz): x 1.98 / 1.41 = x 1.4043 -> 1.537e-5 s -> 2.1584e-5 s
    assert default_efficiencies().at_clock(1.41e9).attn_decode.overhead_s == pytest.approx(2.1584e-5, rel=1e-4)


def test_resolved_system_uses_its_gpu_clock():
    l4 = load_system("l4")
    assert l4.calibration == "datasheet" and l4.gpu.sm_clock_hz == 2.04e9
    assert l4.eff.attn_decode.overhead_s == pytest.approx(1.537e-5 * 1.98 / 2.04, rel=1e-12)
    assert l4.eff.attn_prefill.tile_s == pytest.approx(1.205e-8 * 1.98 / 2.04, rel=1e-12)


def test_a_profile_gives_plain_seconds():
    """The A100's measured profile was fitted in seconds on its own kernels: no clock factor on top."""
    a100 = load_system("a100")
    profile = yaml.safe_load(Path("kvsim/hardware/profiles/a100-80g.yaml").read_text())
    assert a100.eff.attn_decode.overhead_s == pytest.approx(profile["efficiency"]["attn_decode"]["overhead_s"], rel=1e-12)
    # the datasheet-only view of the same GPU takes the defaults at 1.41 GHz
    ds = datasheet_system(a100, default_efficiencies())
    assert ds.eff.attn_decode.overhead_s == pytest.approx(1.537e-5 * 1.98 / 1.41, rel=1e-12)


def test_gpu_file_without_clock_is_priced_at_the_reference_clock(tmp_path):
    spec = yaml.safe_load(Path("kvsim/hardware/gpus/l4.yaml").read_text())
    spec.pop("sm_clock_hz")
    spec["name"], spec["aliases"] = "my-l4", []
    path = tmp_path / "my-l4.yaml"
    path.write_text(yaml.safe_dump(spec))
    s = load_system(str(path))
    assert s.gpu.sm_clock_hz is None
    assert s.eff.attn_decode.overhead_s == pytest.approx(1.537e-5, rel=1e-12)


@pytest.mark.parametrize("bad", [0, 5e7, 2e10, "fast"])
def test_sm_clock_must_be_a_plausible_clock(bad):
    spec = yaml.safe_load(Path("kvsim/hardware/gpus/l4.yaml").read_text())
    spec["sm_clock_hz"] = bad
    with pytest.raises(ValueError, match="sm_clock_hz"):
        GPUSpec.model_validate(spec)


def test_every_shipped_gpu_states_its_clock():
    from kvsim.hardware import catalog

    gpus = {id(g): g for g in catalog("gpu").values()}.values()
    assert len(gpus) >= 20
    for g in gpus:
        assert g.sm_clock_hz is not None and 1e9 <= g.sm_clock_hz <= 3e9, g.name


def test_gpu_file_overrides_are_plain_seconds_and_cannot_set_a_reference_clock(tmp_path):
    """A GPU file's efficiency overrides are that GPU's own numbers: an overhead_s given there is not
    scaled by its clock, and reference_clock_hz there (which had no effect) is an error (audit)."""
    from kvsim.errors import SpecError

    spec = yaml.safe_load(Path("kvsim/hardware/gpus/l4.yaml").read_text())
    spec.update({"name": "my-l4", "aliases": [], "sm_clock_hz": 1.0e9})
    spec["efficiency"] = {"attn_decode": {"overhead_s": 1.537e-5}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    assert load_system(str(tmp_path / "a.yaml")).eff.attn_decode.overhead_s == 1.537e-5  # as written, at 1 GHz too
    assert load_system(str(tmp_path / "a.yaml")).eff.attn_prefill.overhead_s == pytest.approx(2.864e-5 * 1.98, rel=1e-12)
    spec["efficiency"] = {"attn_decode": {"reference_clock_hz": 1.0e9}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="reference_clock_hz: a GPU file's efficiencies are this GPU's own"):
        load_system(str(tmp_path / "b.yaml"))


def test_list_hardware_shows_the_sm_clock():
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kvsim", "list", "hardware", "--json"], capture_output=True, text=True, timeout=120)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["a100-80g"]["SM clock"] == "1.41 GHz" and rows["l40s"]["SM clock"] == "2.52 GHz"
