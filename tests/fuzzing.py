"""Fuzz harness (issue 10): hypothesis strategies for every input a user writes, run in-process.

Targets (:data:`TARGETS`, name -> strategy of :class:`Case`):

* spec YAML: ``gpu``, ``host``, ``link``, ``system``, ``model`` (a shipped spec with fields
  replaced, removed or added, or its text cut or corrupted);
* ``hf_config``: a Hugging Face ``config.json`` of ``tests/data/hf`` mutated the same way;
* trace files: ``burstgpt``, ``azure``, ``mooncake`` (rows with valid and invalid cells) and
  ``user_trace`` (any header and any text or bytes), with random load options;
* ``method``: ``name:key=value,...`` strings as ``--method`` takes them;
* ``cli``: argument lists of ``kvsim estimate``, ``trace info``, ``simulate``, ``list`` and
  (rarely, tiny) ``plan``, run through :func:`kvsim.cli.main` in this process.

:func:`check` runs one case. It raises :class:`Failure` for an exception other than a
:class:`~kvsim.errors.KvsimError` (CLI: a traceback, an exit code other than 0/1/2, an error
that is not ``error:`` lines), a non-finite or negative number in any answer (estimate results,
traces, simulation summaries, JSON and table output), and an input the case knows to be invalid
(``Case.invalid`` says why: a non-finite number, a boolean or text where a number belongs, a
negative count, ...) that was accepted. It returns ``"accepted"`` or ``"rejected"``.

``tests/test_fuzz.py`` runs a few hundred examples per target in CI; ``benchmarks/fuzz.py``
runs 10,000 or more per target and records the counts in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

from kvsim.errors import KvsimError

HW_DIR = Path(__file__).resolve().parent.parent / "kvsim" / "hardware"
MODELS_DIR = Path(__file__).resolve().parent.parent / "kvsim" / "models"
HF_DIR = Path(__file__).resolve().parent / "data" / "hf"

INF, NAN = float("inf"), float("nan")
MAX_TOKENS = 2**31 - 1


class Failure(AssertionError):
    """A bug the fuzzer found: an uncaught exception, a non-finite answer, an invalid input accepted."""


@dataclass
class Case:
    """One generated input.

    Attributes:
        target: the target's name.
        files: file name -> text or bytes, written to a fresh directory before the run.
        args: what the run needs besides the files (method spec, argv, load options, ...).
        invalid: why the input must be rejected, or None when either outcome is fine.
        expect: target-specific oracle data (e.g. the token pairs a trace may hold).
    """

    target: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    invalid: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)


# ============================================================== values

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: text that is never a number (where one belongs, the input is invalid)
NOT_NUMBERS = ["abc", "", " ", "1.2.3", "one", "0x", "--1", "1e", "\x00", "None", "null", "[]"]
NON_FINITE_TEXT = ["inf", "-inf", "nan", "Infinity", "-Infinity", "NaN", "+inf", "1e400", "-1e400"]


def bad_number() -> st.SearchStrategy[tuple[Any, str]]:
    """A value that is never a valid count, size or rate: ``(value, why)``."""
    return st.one_of(
        st.sampled_from([INF, -INF, NAN]).map(lambda v: (v, f"non-finite {v}")),
        st.booleans().map(lambda v: (v, f"boolean {v}")),
        st.sampled_from(NOT_NUMBERS + NON_FINITE_TEXT).map(lambda v: (v, f"text {v!r}")),
        st.sampled_from([[], [1], {}, {"a": 1}]).map(lambda v: (v, f"container {v!r}")),
        st.integers(max_value=-1, min_value=-(10**30)).map(lambda v: (v, f"negative {v}")),
        st.floats(max_value=-1e-6, min_value=-1e300).map(lambda v: (v, f"negative {v}")),
    )


def odd_number(base: Any) -> st.SearchStrategy[Any]:
    """A value that may or may not be allowed: zero, huge, tiny, fractional, scaled, as text."""
    b = float(base) if _is_number(base) and abs(base) < 1e300 else 1.0
    return st.one_of(
        st.sampled_from([0, 1, 2, 3, 7, 0.5, 1e-320, 1e-9, 2**31, 2**53 + 1, 2**63, 2**64, 10**400, 1e300, 1.7e308]),
        st.integers(min_value=0, max_value=2**70),
        st.floats(min_value=0, max_value=1e30, allow_nan=False),
        st.sampled_from([0.5, 0.999, 1.001, 2, 10, 1000, 1e6]).map(lambda f: b * f),
        st.sampled_from([str(base), f"{b:.6g}", f"{b:e}", f" {base} ", f"{b:.1f}", "1_000"]),
    )


def mutation(base: Any, numeric: bool) -> st.SearchStrategy[tuple[Any, str | None]]:
    """A replacement for a field whose value is ``base``: ``(value, why invalid or None)``.

    For a numeric field (``numeric``) non-finite, boolean, text, container and negative values
    are known invalid; anything else (and any value of a non-numeric field) may go either way."""
    anything = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    ).map(lambda v: (v, None))
    odd = odd_number(base).map(lambda v: (v, None))
    if not numeric:
        same = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_. ", min_size=1, max_size=12)
        return st.one_of(anything, odd, same.map(lambda v: (v, None)), same.map(lambda v: (v, None)))
    return st.one_of(bad_number(), odd, odd, odd, anything)


# ============================================================== spec YAML and HF configs

def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


_SPEC_BASES: dict[str, list[dict]] = {}


def spec_bases(kind: str) -> list[dict]:
    """Shipped spec dicts of ``kind`` (gpu, host, link, system, model)."""
    if kind not in _SPEC_BASES:
        folder = MODELS_DIR if kind == "model" else HW_DIR / f"{kind}s"
        _SPEC_BASES[kind] = [_load(p) for p in sorted(folder.glob("*.yaml"))]
    return _SPEC_BASES[kind]


def hf_bases() -> list[dict]:
    if "hf" not in _SPEC_BASES:
        _SPEC_BASES["hf"] = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(HF_DIR.glob("*.json"))]
    return _SPEC_BASES["hf"]


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Key paths of every leaf (and of every nested mapping) of a dict."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    return out


def _get(d: dict, path: tuple) -> Any:
    for k in path:
        d = d[k]
    return d


def _set(d: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _delete(d: dict, path: tuple) -> None:
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]


#: fields of each spec kind that must be present (removing one makes the spec invalid)
REQUIRED = {
    "gpu": {("name",), ("memory_bytes",), ("memory_bw_bytes_per_s",), ("peak_flops_per_s",), ("l2_bytes",),
            ("sm_count",), ("tdp_w",), ("host_link",), ("source",), ("peak_flops_per_s", "fp32")},
    "host": {("name",), ("vendor",), ("cores",), ("dram_bytes",), ("dram_bw_bytes_per_s",), ("peak_flops_per_s",),
             ("host_link",), ("source",)},
    "link": {("name",), ("link_type",), ("bw_bytes_per_s",), ("latency_s",), ("source",)},
    "system": {("name",), ("gpu",), ("host",), ("source",)},
    "model": {("name",), ("architecture",), ("num_layers",), ("hidden_size",), ("num_heads",), ("num_kv_heads",),
              ("head_dim",), ("intermediate_size",), ("vocab_size",), ("max_context_tokens",), ("source",)},
}
#: numeric fields that may be negative (none in these specs)
SIGNED: set[tuple] = set()
#: Hugging Face keys the importer reads, per model_type (a bad number there must be rejected)
HF_USED = {
    "common": {"num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_position_embeddings"},
    "llama": {"intermediate_size", "num_key_value_heads"}, "mistral": {"intermediate_size", "num_key_value_heads"},
    "qwen2": {"intermediate_size", "num_key_value_heads"}, "phi3": {"intermediate_size", "num_key_value_heads"},
    "mixtral": {"intermediate_size", "num_key_value_heads", "num_local_experts", "num_experts_per_tok"},
    "opt": {"ffn_dim"},
    "deepseek_v2": {"intermediate_size", "v_head_dim", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                    "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"},
}


@st.composite
def mutated_dict(draw, base: dict, kind: str) -> tuple[dict, str | None]:
    """``base`` with 1-3 edits (replace a value, remove a field, add one): ``(dict, why invalid)``.

    Each edit's reason is kept per key path, so a later edit of the same field (or of a field
    above it) replaces it."""
    d = copy.deepcopy(base)
    reasons: dict[tuple, str] = {}
    added: set[str] = set()  # unknown keys: invalid while they exist, whatever their value

    def forget(path: tuple) -> None:
        for p in [p for p in reasons if p[: len(path)] == path]:
            del reasons[p]

    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = [p for p in _paths(d) if p != ("kind",)]
        numeric_paths = [p for p in paths if _is_number(_get(d, p))]
        if numeric_paths and not draw(one_in(4)):
            paths = numeric_paths  # mostly numbers: where the bugs were
        op = draw(st.sampled_from(["replace"] * 6 + ["remove", "add"]))
        if op == "add" or not paths:
            key = draw(st.sampled_from(["extra", "memory", "num_layer", "typo_field", "source2"]))
            d[key] = draw(st.integers())
            forget((key,))
            added.add(key)
            continue
        path = draw(st.sampled_from(paths))
        old = _get(d, path)
        forget(path)
        if op == "remove":
            if len(path) == 1:
                added.discard(path[0])
            _delete(d, path)
            if kind != "hf" and path in REQUIRED.get(kind, set()):
                reasons[path] = f"required field {'.'.join(map(str, path))} removed"
            continue
        try:
            numeric = _is_number(_get(base, path))  # the field's type, not an earlier edit's
        except (KeyError, TypeError):
            numeric = False
        value, bad = draw(mutation(old, numeric))
        _set(d, path, value)
        if not (bad and numeric and path not in SIGNED):
            continue
        if kind == "hf":
            used = HF_USED["common"] | HF_USED.get(str(d.get("model_type")), set())
            if len(path) == 1 and path[0] in used:
                reasons[path] = f"{path[0]}: {bad}"
        else:
            reasons[path] = f"{'.'.join(map(str, path))}: {bad}"
    if kind != "hf":
        reasons.update({(k,): f"unknown field {k!r}" for k in sorted(added)})
    return d, next(iter(reasons.values()), None)


@st.composite
def corrupted_text(draw, text: str, deep: tuple[int, ...] = (50, 300, 300, 1000)) -> tuple[str | bytes, str | None]:
    """The text cut, with bytes inserted, non-UTF-8, nested deeply, or as is: ``(text, why)`` where
    ``why`` is why it is now invalid, ``"changed"`` (either way) or None (as is)."""
    how = draw(st.sampled_from(["as is"] * 16 + ["cut", "insert", "bytes", "empty"] + ["deep"] * (draw(st.integers(0, 3)) == 0)))
    if how == "cut":  # may cut away what made it invalid: either outcome is fine
        return text[: draw(st.integers(0, max(0, len(text) - 1)))], "changed"
    if how == "insert":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.text(max_size=8)) + text[i:], "changed"
    if how == "bytes":
        raw = text.encode("utf-8")
        i = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\x80abc", b"\xc3"]))
        return raw[:i] + bad + raw[i:], "not UTF-8"
    if how == "deep":
        n = draw(st.sampled_from(deep))  # YAML parses deep nesting slowly: 1000 levels take 0.15 s
        return "[" * n + "]" * n, "not a mapping"
    if how == "empty":
        return "", "empty file"
    return text, None


@st.composite
def spec_case(draw, kind: str) -> Case:
    """A GPU/host/link/system/model YAML file (plus, for a run, a method and a context)."""
    base = draw(st.sampled_from(spec_bases(kind)))
    d, why = draw(mutated_dict(base, kind))
    text = yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    text, why_text = draw(corrupted_text(text))
    why = why_text if why_text in ("not UTF-8", "not a mapping", "empty file") else (why if why_text is None else None)
    method = draw(st.sampled_from(["full", "kivi", "magicpig", "quest", "h2o", "streamingllm", "infllm", "snapkv"]))
    context = draw(st.one_of(st.integers(1, 4096), st.integers(1, 32768), st.integers(1, 2_000_000)))
    batch = "max" if draw(one_in(8)) else draw(st.integers(1, 64))
    tp = draw(st.sampled_from([1, 1, 2, 4, 8]))
    return Case(kind, files={f"{kind}.yaml": text}, args={"method": method, "context": context, "batch": batch, "tp": tp},
                invalid=why)


@st.composite
def hf_case(draw) -> Case:
    base = draw(st.sampled_from(hf_bases()))
    d, why = draw(mutated_dict(base, "hf"))
    text = json.dumps(d, indent=1)  # NaN / Infinity literals where a value is non-finite
    text, why_text = draw(corrupted_text(text, deep=(1000, 100_000)))
    why = why_text if why_text in ("not UTF-8", "not a mapping", "empty file") else (why if why_text is None else None)
    method = draw(st.sampled_from(["full", "kivi", "magicpig", "quest", "h2o", "mla"]))
    return Case("hf_config", files={"config.json": text},
                args={"method": method, "context": draw(st.integers(1, 300_000)), "batch": draw(st.integers(1, 32)),
                      "tp": draw(st.sampled_from([1, 2]))}, invalid=why)


def _half(system) -> str:
    return "bf16" if "bf16" in system.gpu.peak_flops_per_s else "fp16"


def _deployment(system, model, tp: int):
    # lazy: keep the harness import light for collection
    from kvsim.costmodel.deployment import Deployment

    half = _half(system)
    return Deployment(system=system, model=model, weight_dtype=half, kv_dtype=half, act_dtype=half, tp=tp)


def _estimate_all(dep, method_spec: str, context: int, batch) -> list:
    """Estimates for ``method_spec`` on ``dep`` (a method that cannot run it raises ConfigError)."""
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    m = make_method(method_spec, dep)
    ctx = int(min(context, dep.model.max_context_tokens))
    return [estimate(dep, m, ctx, batch)]


def run_spec(case: Case, folder: Path) -> Any:
    from kvsim.hardware import load_system
    from kvsim.hardware.spec import HostSpec, LinkSpec
    from kvsim.models import load_model
    from kvsim.specbase import load_yaml_as

    kind, a = case.target, case.args
    path = folder / next(iter(case.files))
    if kind in ("gpu", "system"):
        system = load_system(str(path))
        model = load_model("llama-3.1-8b")
    elif kind == "host":
        host = load_yaml_as(HostSpec, path)
        base = load_system("a100")
        system = replace(base, host=host, host_sockets=host.sockets, host_memory_bytes=host.dram_bytes)
        model = load_model("llama-3.1-8b")
    elif kind == "link":
        link = load_yaml_as(LinkSpec, path)
        system = replace(load_system("a100"), gpu_host_link=link, gpu_gpu_link=link)
        model = load_model("llama-3.1-8b")
    elif kind == "model":
        system, model = load_system("h100"), load_model(str(path))
    else:  # hf_config
        system, model = load_system("h100"), load_model(str(path))
    tp = a["tp"] if a["tp"] <= system.num_gpus else 1
    dep = _deployment(system, model, tp)
    return _estimate_all(dep, a["method"], a["context"], a["batch"])


# ============================================================== method parameter strings

def _method_fields() -> dict[str, dict[str, bool]]:
    """method -> param -> numeric?"""
    from kvsim.methods import REGISTRY

    out = {}
    for name, cls in REGISTRY.items():
        params = {}
        for k, f in cls.Params.model_fields.items():
            ann = repr(f.annotation)
            params[k] = ("int" in ann or "float" in ann) and "Literal" not in ann and "str" not in ann
        out[name] = params
    return out


_FIELDS: dict[str, dict[str, bool]] = {}


def method_fields() -> dict[str, dict[str, bool]]:
    if not _FIELDS:
        _FIELDS.update(_method_fields())
    return _FIELDS


def param_text() -> st.SearchStrategy[tuple[str, str | None]]:
    """A parameter value as typed on the command line: ``(text, why invalid if numeric)``."""
    return st.one_of(
        st.sampled_from(["inf", "-inf", "nan", "Infinity", "1e400", "-1e400", "NaN"]).map(lambda t: (t, f"non-finite {t}")),
        st.sampled_from(["true", "false", "True"]).map(lambda t: (t, f"boolean {t}")),
        st.sampled_from(["abc", "", "1,5", "x1"]).map(lambda t: (t, f"text {t!r}")),
        st.integers(min_value=-(2**70), max_value=2**70).map(lambda v: (str(v), None)),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda v: (repr(v), None)),
        st.sampled_from(["0", "1", "2", "4", "8", "16", "32", "64", "128", "0.5", "0.01", "1e-320", "999", "2**10",
                         "fp8", "int8", "bf16", "auto", "max"]).map(lambda t: (t, None)),
    )


@st.composite
def method_case(draw) -> Case:
    fields_of = method_fields()
    name = draw(st.one_of(st.sampled_from(sorted(fields_of)), st.sampled_from(["", "fulll", "KIVI", "all", "x:y"])))
    params = fields_of.get(name, {})
    keys = draw(st.lists(st.one_of(st.sampled_from(sorted(params) or ["bits"]), st.sampled_from(["bitz", "", "k"])),
                         max_size=3, unique=True))
    why = None
    items = []
    for k in keys:
        text, bad = draw(param_text())
        items.append(f"{k}={text}")
        if bad and params.get(k) and not bad.startswith("text") and text not in ("",):
            why = why or f"{k}={text}: {bad}"
    spec = name + (":" + ",".join(items) if items else "")
    if "," in text_safe(items):
        why = None  # a comma inside a value splits it: not this parameter any more
    hw = draw(st.sampled_from(["a100", "h100", "v100", "4090", "l20"]))
    model = draw(st.sampled_from(["llama-3.1-8b", "mistral-7b-v0.1", "deepseek-v2-lite", "mixtral-8x7b", "opt-6.7b"]))
    return Case("method", args={"spec": spec, "hw": hw, "model": model, "context": draw(st.integers(1, 200_000)),
                                "batch": "max" if draw(one_in(8)) else draw(st.integers(1, 256)),
                                "simulate": draw(one_in(10))}, invalid=why)


def text_safe(items: list[str]) -> str:
    return ",".join(i.partition("=")[2] for i in items)


def run_method(case: Case, folder: Path) -> Any:  # noqa: ARG001
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate
    from kvsim.pricing.step import StepModel

    a = case.args
    dep = build_deployment(a["hw"], a["model"])
    m = make_method(a["spec"], dep)
    ctx = int(min(a["context"], dep.model.max_context_tokens))
    out: list[Any] = [estimate(dep, m, ctx, a["batch"])]
    rng = np.random.default_rng(len(a["spec"]))
    decode = rng.integers(1, ctx + 1, size=7).astype(np.float64)
    prompt = np.minimum(decode, rng.integers(1, ctx + 1, size=7)).astype(np.float64)
    sm = StepModel(dep, m)
    out.append(sm.time_s(decode_ctx=decode, decode_prompt=prompt))
    out.append(sm.time_s(prefill_new=np.array([float(min(ctx, 8192))]), prefill_cached=np.array([0.0])))
    if a["simulate"]:
        out.append(_simulate(dep, m, _tiny_trace(min(ctx, 4096))))
    return out


def _tiny_trace(prompt: int):
    from kvsim.traces.base import Trace

    return Trace("fuzz", np.array([0.0, 0.01, 0.5]), np.array([prompt, max(1, prompt // 2), 1], dtype=np.int64),
                 np.array([8, 1, 16], dtype=np.int64))


def _simulate(dep, method, trace):
    from kvsim.plan.digest import digest
    from kvsim.sim.replica import SimConfig, simulate

    res = simulate(dep, method, trace, SimConfig(max_num_seqs=8, max_num_batched_tokens=2048))
    return [res.summary, digest(res)]


# ============================================================== trace files

def token_cell(noisy: bool = True) -> st.SearchStrategy[tuple[str, int | None, str | None]]:
    """A token-count cell: ``(text, value if it can be read as one, why invalid)``; only valid
    cells unless ``noisy``."""
    good = st.one_of(
        st.integers(0, 4000).map(lambda v: (str(v), v, None)),
        st.integers(1, 300).map(lambda v: (str(v), v, None)),
        st.integers(4001, MAX_TOKENS).map(lambda v: (str(v), v, None)),
        st.sampled_from(["12.0", "1e3", "0.0", "+5"]).map(lambda t: (t, int(float(t)), None)),
    )
    if not noisy:
        return good
    return st.one_of(
        good, good, good,
        st.integers(MAX_TOKENS + 1, 2**80).map(lambda v: (str(v), None, f"{v} tokens")),
        st.integers(-(2**70), -1).map(lambda v: (str(v), None, f"negative {v}")),
        st.sampled_from(["12.5", "0.1", "abc", "", "nan", "inf", "-inf", "1e20", "9223372036854775808", "1\x002",
                         "\x00", "1,5", "true"]).map(lambda t: (t, None, f"bad cell {t!r}")),
    )


def time_cell(prev: float, noisy: bool = True) -> st.SearchStrategy[tuple[str, float | None, str | None]]:
    """A seconds cell after ``prev``: ``(text, value, why invalid)``; only valid unless ``noisy``."""
    good = st.one_of(
        st.floats(0, 5).map(lambda d: (repr(prev + d), prev + d, None)),
        st.just((repr(prev), prev, None)),
        st.sampled_from([1e11, 9.99e11]).map(lambda v: (repr(v), v, None)),
    )
    if not noisy:
        return good
    return st.one_of(good, good, good, st.sampled_from(
        ["nan", "inf", "-inf", "-1", "1e13", "1e400", "abc", "", "1\x002", "\x00"]).map(lambda t: (t, None, f"bad time {t!r}")))


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (hypothesis leans to the first choice: False)."""
    return st.sampled_from([False] * (n - 1) + [True])


def noise(draw) -> Callable[[], bool]:
    """Per case: no bad cells (about half the cases), or some cells bad (1 in 10, 1 in 3, all)."""
    n = draw(st.sampled_from([0, 0, 0, 0, 0, 10, 3, 1]))
    return lambda: n > 0 and draw(one_in(n))


@st.composite
def load_options(draw) -> tuple[dict, str | None]:
    """Keyword options of load_trace, some out of range: ``(options, why invalid)``."""
    opts: dict[str, Any] = {}
    why = None
    for name, kind in (("rate", "pos"), ("time_scale", "pos"), ("limit", "count"), ("start_s", "time"),
                       ("end_s", "time"), ("max_prompt_tokens", "count"), ("max_output_tokens", "count")):
        if not draw(one_in(20)):
            continue
        value = draw(st.one_of(
            st.sampled_from([INF, -INF, NAN]),
            st.sampled_from([0, -1, 1, 2, 10, 0.5, 1e-320, 1e-300, 1e300, 2**63, 10**30]),
            st.sampled_from([1, 2, 3, 5, 10, 100, 1000, 0.5, 2.5, 1e3, 60.0]),
            st.sampled_from([1, 2, 3, 5, 10, 100, 1000, 0.5, 2.5, 1e3, 60.0]),
        ))
        if "rate" in opts and name == "time_scale":
            continue
        if isinstance(value, float) and not math.isfinite(value):
            why = why or f"{name}={value}"
        elif kind in ("pos", "count") and value <= 0:
            why = why or f"{name}={value}"
        elif kind == "count" and (value != int(value) or value > 2**63 - 1):
            why = why or f"{name}={value}"
        opts[name] = value
    if "start_s" in opts and "end_s" in opts and opts["end_s"] <= opts["start_s"]:
        why = why or "end_s <= start_s"
    return opts, why


@st.composite
def burstgpt_case(draw) -> Case:
    eight = draw(st.booleans())
    header = ("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type" if eight
              else "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type")
    rows, pairs, bad_time_rows, all_rows = [], [], 0, 0
    t = draw(st.floats(0, 1000))
    noisy = noise(draw)
    for _ in range(draw(st.integers(1, 10))):
        tt, tv, twhy = draw(time_cell(t, noisy()))
        t = tv if tv is not None else t
        pt, pv, _ = draw(token_cell(noisy()))
        ot, ov, _ = draw(token_cell(noisy()))
        model = draw(st.sampled_from(["ChatGPT", "GPT-4", "other", ""]))
        log = draw(st.sampled_from(["Conversation log", "API log", "x"]))
        cells = [tt] + (["s1", "0.5"] if eight else []) + [model, pt, ot, "0", log]
        if noisy() and draw(one_in(10)):
            cells = cells[: draw(st.integers(0, len(cells) - 1))]  # a short row
            pv = ov = None
        rows.append(",".join(_quote(c) for c in cells))
        if pv is not None and ov is not None and pv > 0 and ov > 0:
            pairs.append((pv, ov))
            all_rows += 1
            bad_time_rows += twhy is not None
    return _trace_case(draw, "burstgpt", header, rows, pairs, bad_time_rows, all_rows)


def _quote(cell: str) -> str:
    return f'"{cell}"' if ("," in cell or '"' in cell) else cell


def _trace_case(draw, target, header, rows, pairs, bad_time_rows, kept_rows, ext=".csv") -> Case:
    text = "\n".join([header, *rows]) + draw(st.sampled_from(["\n", "", "\n\n", "\r\n"]))
    opts, why = draw(load_options())
    return Case(target, files={f"trace{ext}": text}, args={"options": opts}, invalid=why,
                expect={"pairs": pairs, "bad_time_rows": bad_time_rows, "kept_rows": kept_rows})


@st.composite
def azure_case(draw) -> Case:
    rows, pairs, bad_time_rows, kept = [], [], 0, 0
    base = np.datetime64("2023-11-16T18:15:46.6805900", "ns")
    t = 0.0
    noisy = noise(draw)
    for _ in range(draw(st.integers(1, 10))):
        t += draw(st.floats(0, 100))
        good = str(base + np.timedelta64(int(t * 1e9), "ns")).replace("T", " ")[:27]
        kind = draw(st.sampled_from(["nul", "garbage", "empty", "month", "zone", "nan"])) if noisy() else "ok"
        cell = {"ok": good, "nul": good[:17] + "\x00" + good[17:], "garbage": "abc", "empty": "",
                "month": "2023-13-45 99:99:99.0000000", "zone": good + "+05:00", "nan": "nan"}[kind]
        pt, pv, _ = draw(token_cell())
        ot, ov, _ = draw(token_cell())
        rows.append(",".join(_quote(c) for c in (cell, pt, ot)))
        if pv is not None and ov is not None and pv > 0 and ov > 0:
            pairs.append((pv, ov))
            kept += 1
            bad_time_rows += kind != "ok" and kind != "zone"
    return _trace_case(draw, "azure", "TIMESTAMP,ContextTokens,GeneratedTokens", rows, pairs, bad_time_rows, kept)


@st.composite
def mooncake_case(draw) -> Case:
    lines, pairs, bad_time_rows, kept = [], [], 0, 0
    t = 0
    noisy = noise(draw)
    # a file without hash_ids on any line is a valid trace without prefix ids (on some lines only: an error)
    no_ids = draw(one_in(8))
    for _ in range(draw(st.integers(1, 10))):
        t += draw(st.integers(0, 5000))
        pt, pv, _ = draw(token_cell(noisy()))
        ot, ov, _ = draw(token_cell(noisy()))
        obj: dict[str, Any] = {"timestamp": t, "input_length": pv if pv is not None else pt,
                               "output_length": ov if ov is not None else ot}
        time_bad = False
        if noisy() and draw(one_in(4)):
            obj["timestamp"], _ = draw(bad_number())
            time_bad = True
        nblocks = -(-pv // 512) if pv is not None else 1
        ids = list(range(min(nblocks, 50))) if not noisy() else draw(st.one_of(
            st.just(list(range(min(nblocks, 50)))), st.lists(st.integers(-(2**70), 2**70), max_size=4),
            st.sampled_from([None, "x", [True], [1.5], {}]),
        ))
        ids_ok = True
        if not no_ids:
            obj["hash_ids"] = ids
            ids_ok = (isinstance(ids, list) and all(type(i) is int and -(2**63) <= i < 2**63 for i in ids)
                      and pv is not None and len(ids) <= nblocks)
        deleted = None
        if noisy() and draw(one_in(6)):
            deleted = draw(st.sampled_from(["timestamp", "input_length", "output_length"] + ([] if no_ids else ["hash_ids"])))
            del obj[deleted]
        if deleted in ("timestamp", "input_length", "output_length"):
            pv = ov = None
        elif deleted is None and not ids_ok:
            pv = None
        # (a line without hash_ids is a valid row if no good line has them, else the whole file is refused)
        line = json.dumps(obj)
        how = draw(st.sampled_from(["text", "deep", "array", "cut"])) if noisy() and draw(one_in(6)) else "ok"
        if how != "ok":
            line = {"text": "not json", "deep": "[" * 100_000 + "]" * 100_000, "array": "[1, 2]",
                    "cut": line[: len(line) // 2]}[how]
            pv = ov = None
        lines.append(line)
        if pv is not None and ov is not None and pv > 0 and ov > 0:
            pairs.append((pv, ov))
            kept += 1
            bad_time_rows += time_bad
    text = "\n".join(lines) + "\n"
    opts, why = draw(load_options())
    return Case("mooncake", files={"trace.jsonl": text}, args={"options": opts}, invalid=why,
                expect={"pairs": pairs, "bad_time_rows": bad_time_rows, "kept_rows": kept})


@st.composite
def user_trace_case(draw) -> Case:
    header = draw(st.one_of(
        st.sampled_from(["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
                         "TIMESTAMP,ContextTokens,GeneratedTokens", "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens",
                         " Timestamp , Model,Request tokens,Response tokens,Total tokens,Log Type", "{", "{}",
                         "arrived_at,num_prefill_tokens,num_decode_tokens", "", "a,b,c"]),
        st.text(max_size=40),
    ))
    body = draw(st.one_of(st.text(max_size=200), st.lists(st.text(alphabet="0123456789.,-e\n\" ", max_size=30),
                                                          max_size=6).map("\n".join)))
    text: str | bytes = header + "\n" + body
    if draw(one_in(10)):
        text = text.encode("utf-8") + draw(st.binary(max_size=20))
    ext = draw(st.sampled_from([".csv", ".jsonl", ".json", ".txt"]))
    opts, why = draw(load_options())
    return Case("user_trace", files={f"trace{ext}": text}, args={"options": opts}, invalid=why)


def run_trace(case: Case, folder: Path) -> Any:
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.traces import load_trace

    path = folder / next(iter(case.files))
    tr = load_trace(str(path), **case.args["options"])
    check_trace(tr, case)
    dep = build_deployment("a100", "llama-3.1-8b")
    out = [tr.arrival_s, tr.prompt_tokens, tr.output_tokens]
    head = tr.head(4)
    head = replace(head, output_tokens=np.minimum(head.output_tokens, 64))  # keep decoding short
    return out + _simulate(dep, make_method("full", dep), head)


def check_trace(tr, case: Case) -> None:
    """A loaded trace holds finite sorted arrivals >= 0, token counts in [1, 2**31 - 1], only
    pairs of rows that were valid, and no row whose time was invalid."""
    a, p, o = tr.arrival_s, tr.prompt_tokens, tr.output_tokens
    if a.dtype.kind != "f" or p.dtype.kind not in "iu" or o.dtype.kind not in "iu":
        raise Failure(f"trace dtypes {a.dtype}, {p.dtype}, {o.dtype}")
    if not (np.isfinite(a).all() and (a >= 0).all() and (np.diff(a) >= 0).all()):
        raise Failure(f"trace arrivals not finite, >= 0 and sorted: {a[:10]}")
    if not ((p >= 1).all() and (o >= 1).all() and (p <= MAX_TOKENS).all() and (o <= MAX_TOKENS).all()):
        raise Failure(f"trace token counts out of [1, 2**31-1]: {p[:10]} {o[:10]}")
    if "pairs" not in case.expect:
        return
    opts = case.args["options"]
    cp, co = opts.get("max_prompt_tokens"), opts.get("max_output_tokens")
    allowed = Counter((min(x, cp) if cp else x, min(y, co) if co else y) for x, y in case.expect["pairs"])
    got = Counter(zip(p.tolist(), o.tolist()))
    extra = got - allowed
    if extra:
        raise Failure(f"trace holds requests from invalid rows: {sorted(extra)[:5]} (valid rows: {sorted(allowed)[:5]})")
    window = any(k in opts for k in ("start_s", "end_s", "limit"))
    if case.expect["bad_time_rows"] and len(tr) == case.expect["kept_rows"] and not window:
        raise Failure(f"a row with an invalid time was accepted ({case.expect['bad_time_rows']} such rows, "
                      f"all {len(tr)} requests kept)")


# ============================================================== CLI options

HWS = ["a100", "h100", "v100", "4090", "l20", "a100-40g", "b200", "x100"]
MODELS = ["llama-3.1-8b", "mistral-7b-v0.1", "deepseek-v2-lite", "mixtral-8x7b", "llama-2-70b", "nope"]
METHODS = ["full", "kivi", "kivi:bits=2", "magicpig", "quest:budget_ratio=0.05", "h2o", "streamingllm", "infllm",
           "snapkv", "full,kivi", "all", "h2o:score_passes=inf", "llmlingua:ratio=inf", "quest:dense_layers=999",
           "mla", "bogus"]
TRACES = ["azure-conv", "azure-code", "burstgpt-sample", "mooncake-conversation", "synthetic-poisson",
          "synthetic-gamma:cv=3", "synthetic-burstgpt", "synthetic-fixed", "synthetic-poisson:n=5,prompt=100000",
          "synthetic-gamma:cv=1e9", "synthetic-poisson:n=1000000000", "nosuch", "synthetic-poisson:rate=inf"]


def opt_value(kind: str) -> st.SearchStrategy[tuple[str, str | None]]:
    """An option value as text: ``(text, why invalid)`` (non-finite numbers are never valid)."""
    nonfinite = st.sampled_from(["inf", "-inf", "nan", "1e400"]).map(lambda t: (t, f"non-finite {t}"))
    junk = st.sampled_from(["abc", "", "-1", "0", "1e-320", "99999999999999999999999", "1.5", "true"]).map(
        lambda t: (t, None))
    good = {
        "int": st.integers(1, 512).map(lambda v: (str(v), None)),
        "ctx": st.one_of(st.integers(1, 300_000), st.integers(1, 10**13)).map(lambda v: (str(v), None)),
        "float": st.floats(0.001, 100).map(lambda v: (f"{v:.4g}", None)),
        "frac": st.floats(0.01, 1).map(lambda v: (f"{v:.3f}", None)),
    }[kind]
    return st.one_of(good, good, good, nonfinite, junk)


@st.composite
def cli_case(draw) -> Case:
    cmd = draw(st.sampled_from(["estimate"] * 8 + ["trace"] * 6 + ["simulate"] * 6 + ["list"] * 2 + ["plan"]))
    argv: list[str] = []
    why = None

    def opt(flag: str, kind: str, p: float = 0.5) -> None:
        nonlocal why
        if draw(st.floats(0, 1)) < p:
            text, bad = draw(opt_value(kind))
            argv.extend([flag, text])
            if bad:
                why = why or f"{flag} {text}: {bad}"

    if cmd == "estimate":
        argv = ["estimate", "--hw", draw(st.sampled_from(HWS)), "--model", draw(st.sampled_from(MODELS)),
                "--method", draw(st.sampled_from(METHODS))]
        opt("--context", "ctx")
        if draw(st.booleans()):
            argv += ["--batch", draw(st.sampled_from(["1", "8", "max", "0", "1000000", "1000001", "lots", "inf"]))]
            why = why or ("--batch inf" if argv[-1] == "inf" else None)
        opt("--tp", "int", 0.3)
        opt("--gpu-memory-utilization", "frac", 0.3)
        opt("--max-num-batched-tokens", "int", 0.3)
        opt("--max-num-seqs", "int", 0.2)
        for flag in ("--weight-dtype", "--kv-dtype"):
            if draw(st.integers(0, 4)) == 0:
                argv += [flag, draw(st.sampled_from(["auto", "bf16", "fp16", "fp8", "int8", "int4", "fp4", "x"]))]
        argv += draw(st.sampled_from([[], ["--json"], ["--allow-long-context"], ["--no-chunked-prefill", "--json"],
                                      ["--no-breakdown"]]))
    elif cmd == "trace":
        argv = ["trace", "info", draw(st.sampled_from(TRACES))]
        opt("--rate", "float", 0.3)
        if "--rate" not in argv:
            opt("--time-scale", "float", 0.3)
        opt("--limit", "int", 0.3)
        opt("--num-requests", "int", 0.3)
        opt("--start-s", "float", 0.2)
        opt("--max-prompt-tokens", "int", 0.2)
        argv += draw(st.sampled_from([[], ["--json"]]))
    elif cmd == "simulate":
        argv = ["simulate", "--hw", draw(st.sampled_from(HWS[:5])), "--model", draw(st.sampled_from(MODELS[:4])),
                "--method", draw(st.sampled_from(METHODS[:9])), "--trace", draw(st.sampled_from(TRACES[:6])),
                "--num-requests", str(draw(st.integers(1, 12)))]
        opt("--rate", "float", 0.4)
        opt("--max-num-seqs", "int", 0.3)
        opt("--max-num-batched-tokens", "int", 0.3)
        opt("--slo-ttft", "float", 0.2)
        opt("--slo-tpot", "float", 0.2)
        opt("--slo-itl", "float", 0.2)
        opt("--watermark", "frac", 0.2)
        if draw(st.integers(0, 4)) == 0:
            text, bad = draw(st.sampled_from([
                ("host=8GiB", None), ("host=1GiB,nvme=16GiB", None), ("host=0", "a tier of size 0"), ("host=64MiB,nvme=1e3", None),
                ("nvme=1TiB", "NVMe tier without a host tier"), ("host=lots", "bad size"), ("host=2000TiB", "over 1 PiB"),
                ("host=4TiB", "over the node's host memory"), ("host=1GiB,drive=x", "unknown drive"),
                ("host=1e400", "inf bytes"), ("host=1GiB,host=2GiB", "given twice"), ("", "empty"),
                ("host=8GiB,load=sync", None), ("host=1GiB,nvme=16GiB,load=async", None),
                ("host=8GiB,load=later", "bad load mode")]))
            argv += ["--kv-offload", text]
            if bad:
                why = why or f"--kv-offload {text!r}: {bad}"
        argv += draw(st.sampled_from([["--json"], ["--json"], [], ["--preemption", "swap", "--json"],
                                      ["--no-chunked-prefill", "--json"]]))
    elif cmd == "list":
        argv = ["list", draw(st.sampled_from(["hardware", "models", "methods", "traces", "gpus"]))]
        argv += draw(st.sampled_from([[], ["--json"]]))
    else:
        argv = ["plan", "--hw", draw(st.sampled_from(HWS[:4])), "--method", draw(st.sampled_from(METHODS[:6])),
                "--num-requests", str(draw(st.integers(3, 6))), "--trace", draw(st.sampled_from(TRACES[:3])),
                "--executor", "serial", "--no-cache", "--no-progress", "--max-output-tokens", "32", "--rel-tol", "0.5"]
        opt("--slo-ttft", "float", 0.3)
        opt("--slo-tpot", "float", 0.2)
        opt("--slo-itl", "float", 0.3)
        argv += draw(st.sampled_from([[], ["--json"]]))
    return Case("cli", args={"argv": argv}, invalid=why)


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_NONFINITE_WORD = re.compile(r"(?<![\w.=])[-+]?(nan|inf|infinity)(?![\w])", re.I)  # not 'rate=inf' (an option)


def run_cli(case: Case, folder: Path) -> Any:
    import kvsim.cli

    argv = case.args["argv"]
    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["kvsim", *argv]
    code: Any = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _chdir(folder):
            try:
                kvsim.cli.main()
            except SystemExit as exc:
                code = exc.code
    except KvsimError:
        raise Failure("a KvsimError escaped main()") from None
    finally:
        sys.argv = old_argv
    code = 0 if code is None else code
    stdout, stderr = out.getvalue(), err.getvalue()
    if _TRACEBACK.search(stderr) or _TRACEBACK.search(stdout):
        raise Failure(f"traceback: {stderr[-400:]}")
    if code not in (0, 1, 2):
        raise Failure(f"exit code {code!r}: {stderr[-300:]}")
    if code == 1:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if not errors:
            raise Failure(f"exit 1 without an 'error:' line: {stderr[-300:]!r}")
        if any(len(ln) > 2000 for ln in errors):
            raise Failure("an error line longer than 2000 characters")
        raise KvsimError(errors[0])  # rejected
    if code == 2:
        raise KvsimError("usage error")  # click rejected the options
    if "--json" in argv and stdout.strip():
        try:
            data = json.loads(stdout, parse_constant=_no_constant)
        except ValueError as e:
            raise Failure(f"--json output is not strict JSON: {e}") from None
        return data
    m = _NONFINITE_WORD.search(stdout)
    if m:
        raise Failure(f"non-finite number in the output: ...{stdout[max(0, m.start() - 80):m.end() + 20]}...")
    return None


def _no_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


@contextlib.contextmanager
def _chdir(path: Path):
    import os

    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ============================================================== answers: finite and >= 0

#: fields that may legitimately be negative (signed errors)
#: fields that may be negative: signed errors, and method parameters defined as offsets (Elastic
#: Cache's ``distance``: positions back from the end, <= 0), echoed in answers' provenance
SIGNED_FIELDS = {"bias", "error", "signed_error", "distance"}


def non_finite(obj: Any, path: str = "", depth: int = 0) -> str | None:
    """Where ``obj`` holds a non-finite or negative number (None when nowhere)."""
    if depth > 40:
        return None
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return None
    if isinstance(obj, (int, np.integer)):
        return f"{path} = {obj}" if obj < 0 and path.rsplit(".", 1)[-1] not in SIGNED_FIELDS else None
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj) or (obj < 0 and path.rsplit(".", 1)[-1] not in SIGNED_FIELDS):
            return f"{path} = {obj}"
        return None
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fiu" and obj.size:
            bad = ~np.isfinite(obj) | (obj < 0) if obj.dtype.kind == "f" else obj < 0
            if bad.any():
                return f"{path}[{int(np.argmax(bad))}] = {obj.flat[int(np.argmax(bad))]}"
        return None
    if isinstance(obj, BaseModel):
        return non_finite(obj.__dict__, path, depth + 1)
    if is_dataclass(obj) and not isinstance(obj, type):
        return non_finite({f.name: getattr(obj, f.name) for f in fields(obj)}, path, depth + 1)
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = non_finite(v, f"{path}.{k}", depth + 1)
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = non_finite(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


# ============================================================== targets and the check

TARGETS: dict[str, tuple[Callable[[], st.SearchStrategy[Case]], Callable[[Case, Path], Any]]] = {
    "gpu": (lambda: spec_case("gpu"), run_spec),
    "host": (lambda: spec_case("host"), run_spec),
    "link": (lambda: spec_case("link"), run_spec),
    "system": (lambda: spec_case("system"), run_spec),
    "model": (lambda: spec_case("model"), run_spec),
    "hf_config": (hf_case, run_spec),
    "burstgpt": (burstgpt_case, run_trace),
    "azure": (azure_case, run_trace),
    "mooncake": (mooncake_case, run_trace),
    "user_trace": (user_trace_case, run_trace),
    "method": (method_case, run_method),
    "cli": (cli_case, run_cli),
}

_counter = itertools.count()
_ROOT: list[Path] = []


def _workdir() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="kvsim-fuzz-")))
    d = _ROOT[0] / f"c{next(_counter)}"
    d.mkdir()
    return d


def check(case: Case) -> str:
    """Run ``case``; ``"accepted"`` or ``"rejected"``, or raise :class:`Failure` (module docstring)."""
    import shutil

    folder = _workdir()
    try:
        for name, content in case.files.items():
            p = folder / name
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content, encoding="utf-8", newline="")
        run = TARGETS[case.target][1]
        try:
            with np.errstate(all="ignore"):
                out = run(case, folder)
        except KvsimError as err:
            msg = str(err)
            if not msg.strip() or any(not ln.strip() for ln in msg.splitlines()):
                raise Failure(f"empty error line in {msg!r}") from None
            return "rejected"
        except Failure:
            raise
        except RecursionError:
            raise Failure("RecursionError") from None
        except Exception as err:  # noqa: BLE001 - every other exception is a bug
            raise Failure(f"uncaught {type(err).__name__}: {str(err)[:300]}") from err
        where = non_finite(out)
        if where:
            raise Failure(f"non-finite or negative number in the answer: {where}")
        if case.invalid:
            raise Failure(f"invalid input accepted ({case.invalid})")
        return "accepted"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
