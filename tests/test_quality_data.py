"""Published quality as data (kvsim/methods/quality.yaml): the numbers are the papers', every claim names
its configuration, model and source, and nothing is attached to a configuration it was not measured on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvsim.methods import REGISTRY
from kvsim.methods._published import claims, published, score_rows


def test_scores_match_methods_md_section_4():
    """Spot checks against METHODS.md §4 (MagicPIG Tables 3 and 6), typed here from the tables."""
    rows = {(r["table"], r["model"], r["method"], r["key"]): r["scores"] for r in score_rows()}
    assert rows[("ruler", "MegaBeam-Mistral-7B-512K", "magicpig", (9, 120))][3] == 82.4  # RULER-96K
    assert rows[("ruler", "Llama-3.1-8B-Instruct", "full", None)][4] == 88.7  # RULER avg
    assert rows[("reasoning", "Llama-3.1-8B-Instruct", "oracle", 0.02)] == [83.1, 57.9, 11.9]
    assert rows[("reasoning", "Llama-3.1-8B-Instruct", "quest", (16, 0.06))] == [55.8, 23.2, 5.2]
    assert len(rows) == 14 + 11  # 7 RULER rows x 2 models + reasoning: full, 3 MagicPIG, 3 TopK, 1 Quest, 3 oracle
    q = published("quest", (16, 0.04), "quest(...)")
    assert [(a.benchmark, a.score, a.full_score) for a in q if a.model == "Llama-3.1-8B-Instruct"][0] == ("RULER-16K", 86.3, 94.2)


def test_every_claim_names_a_valid_configuration_and_a_source():
    """A claim's params are accepted by its method's Params (no typo'd knob), and it has a model and a source."""
    cs = claims()
    assert {"kvcrush", "ems", "a2ats", "cake", "xecomla", "zipcache"} <= {c["method"] for c in cs}
    for c in cs:
        assert c["method"] in REGISTRY and c["source"] and c["model"] and c["claim"]
        if c["params"] is not None:
            REGISTRY[c["method"]].Params.model_validate(c["params"])
    kv = claims("kvcrush")
    assert len(kv) == 1 and kv[0]["params"] == {"budget_ratio": 0.25} and "< 1 %" not in kv[0]["claim"]
    assert "less than 1 %" in kv[0]["claim"]


def test_new_methods_show_no_scores_they_were_not_measured_for():
    """Claims are not scores: the new methods and compositions attach no PublishedAccuracy row."""
    from synthetic import llama31_8b, synthetic_system

    from kvsim.costmodel.deployment import Deployment
    from kvsim.methods import make_method

    d = Deployment(system=synthetic_system(), model=llama31_8b())
    for spec in ("ems", "kvcrush", "a2ats", "kivi+quest:budget_ratio=0.04"):
        assert make_method(spec, d).published_accuracy() == []
    assert make_method("quest:budget_ratio=0.04", d).published_accuracy()  # measured: shown


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=120)


def test_cli_list_methods_quality():
    """`kvsim list methods --quality --json` lists scored rows and claims; --quality elsewhere is one error line."""
    r = kvsim("list", "methods", "--quality", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert any(x["method"] == "kvcrush" and x["configuration"] == "budget_ratio=0.25" for x in rows)
    assert any(x["method"] == "magicpig" and x["configuration"] == "(10, 150)" and "RULER-16K 91.8" in x["published"]
               for x in rows)
    e = kvsim("list", "models", "--quality")
    assert e.returncode == 1 and e.stderr.startswith("error:") and e.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("table", ["ruler", "reasoning"])
def test_every_scored_row_has_its_full_baseline(table):
    rows = [r for r in score_rows() if r["table"] == table]
    models = {r["model"] for r in rows}
    assert all(any(r["method"] == "full" and r["model"] == m for r in rows) for m in models)
