"""Trace names, file-format detection and synthetic spec strings.

A spec is one of:

* a registered name (see :data:`DESCRIPTIONS`);
* a synthetic generator with inline options, ``NAME:key=value,key=value``, e.g.
  ``synthetic-gamma:rate=5,cv=3,n=1000,prompt=512,output=128``. Keys are the params-model
  field names or their short aliases (``n``, ``prompt``, ``output``), plus ``seed``;
* a file path; the format is detected from the first line: ``{`` -> Mooncake JSONL, a
  BurstGPT header (6 or 8 columns) -> BurstGPT CSV, ``TIMESTAMP,ContextTokens,GeneratedTokens``
  -> Azure CSV. ``.gz`` files are read transparently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from kvsim.errors import TraceError, unknown_name
from kvsim.traces import azure, burstgpt, mooncake, synthetic
from kvsim.traces._io import first_line
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, build_trace, without_rate

#: name -> one-line description, in display order
DESCRIPTIONS: dict[str, str] = {
    "burstgpt": "BurstGPT_1.csv (ChatGPT/GPT-4 on Azure, 1.43M requests) from the cache; "
    "falls back to the bundled 400-row sample",
    "burstgpt-sample": "bundled first 400 rows of BurstGPT_1.csv (6-column format, 17 failed)",
    "burstgpt3-sample": "bundled 400 rows of BurstGPT_3.csv (8-column format with Session ID, 1 failed)",
    "azure-code": "Azure LLM inference 2023, code: 8,819 requests over 57 min (Splitwise)",
    "azure-conv": "Azure LLM inference 2023, conversation: 19,366 requests over 58 min (Splitwise)",
    "mooncake-conversation": "Mooncake FAST'25 conversation trace: 12,031 requests, 512-token prefix blocks",
    "mooncake-synthetic": "Mooncake FAST'25 synthetic trace: 3,993 requests, 512-token prefix blocks",
    "synthetic-poisson": "Poisson arrivals, fixed lengths; options rate, n, prompt, output, seed",
    "synthetic-gamma": "Gamma inter-arrivals with a given CV, fixed lengths; options rate, cv, n, prompt, output, seed",
    "synthetic-burstgpt": "BurstGPT-modelled: Gamma arrivals, Zipf prompt/output lengths; options rate, cv, n, "
    "prompt_a/min/max, output_a/min/max, seed",
    "synthetic-fixed": "fixed lengths, evenly spaced arrivals (default rate=inf: all at 0 s); "
    "options rate, n, prompt, output, seed",
}

SYNTHETIC: dict[str, type[synthetic._Params]] = {
    "synthetic-poisson": synthetic.PoissonParams,
    "synthetic-gamma": synthetic.GammaParams,
    "synthetic-burstgpt": synthetic.BurstGPTParams,
    "synthetic-fixed": synthetic.FixedParams,
}

_BUNDLED: dict[str, Callable[[LoadOptions], Trace]] = {
    "burstgpt": burstgpt.load_burstgpt,
    "burstgpt-sample": lambda o: burstgpt.read_burstgpt(burstgpt.SAMPLE_1, o, name="burstgpt-sample"),
    "burstgpt3-sample": lambda o: burstgpt.read_burstgpt(burstgpt.SAMPLE_3, o, name="burstgpt3-sample"),
    "azure-code": lambda o: azure.read_azure(azure.CODE, o, name="azure-code"),
    "azure-conv": lambda o: azure.read_azure(azure.CONV, o, name="azure-conv"),
    "mooncake-conversation": lambda o: mooncake.read_mooncake(mooncake.CONVERSATION, o, name="mooncake-conversation"),
    "mooncake-synthetic": lambda o: mooncake.read_mooncake(mooncake.SYNTHETIC, o, name="mooncake-synthetic"),
}
_BURSTGPT_NAMES = ("burstgpt", "burstgpt-sample", "burstgpt3-sample")


def _only_burstgpt(what: str, opts: LoadOptions) -> None:
    if opts.model is not None or opts.log_type is not None:
        raise TraceError(f"the model and log_type filters apply only to BurstGPT traces, not to {what}")


def parse_inline(name: str, text: str) -> dict[str, str]:
    """``"rate=5,cv=3"`` -> ``{"rate": "5", "cv": "3"}``; raise TraceError on a malformed item."""
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise TraceError(f"bad option '{item}' in trace spec '{name}:{text}'; expected key=value")
        options[key.strip()] = value.strip()
    return options


def _validation_line(name: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "options"
        got = f" (got {e['input']!r})" if loc != "options" and "input" in e else ""
        parts.append(f"{loc}: {e['msg']}{got}")
    return f"bad options for {name}: " + "; ".join(parts)


def load_synthetic(name: str, inline: str, opts: LoadOptions) -> Trace:
    """Generate a synthetic trace from its inline options and the load options.

    ``opts.rate`` and ``opts.num_requests``, when given, override ``rate`` and ``n``; an
    inline ``seed`` overrides ``opts.seed``.
    """
    model = SYNTHETIC[name]
    to_alias = {k: f.alias or k for k, f in model.model_fields.items()}  # errors then name 'n', not 'num_requests'
    to_alias.update({a: a for a in list(to_alias.values())})
    values: dict[str, object] = {}
    seed: object = opts.seed
    for key, value in parse_inline(name, inline).items():
        if key == "seed":
            seed = value
        elif key in to_alias:
            values[to_alias[key]] = value
        else:
            choices = sorted({f.alias or k for k, f in model.model_fields.items()} | {"seed"})
            raise TraceError(f"unknown option '{key}' for {name}; options: {', '.join(choices)}")
    if opts.rate is not None:
        values["rate"] = opts.rate
    if opts.num_requests is not None:
        values[to_alias["num_requests"]] = opts.num_requests
    try:
        params = model.model_validate(values)
    except ValidationError as err:
        raise TraceError(_validation_line(name, err)) from None
    try:
        seed = int(str(seed))
        rng = np.random.default_rng(seed)
    except ValueError:
        raise TraceError(f"seed must be a whole number >= 0, got {seed!r}") from None
    raw = synthetic.generate(params, rng)
    return build_trace(
        raw, replace(without_rate(opts), seed=seed), name=name, source=synthetic.describe(name, params, seed),
        meta={"format": "synthetic", "params": params.model_dump()},
    )


def load_file(path: Path, opts: LoadOptions) -> Trace:
    """Load a trace file, detecting BurstGPT CSV, Azure CSV or Mooncake JSONL from its first line."""
    head = first_line(path).lstrip()
    if head.startswith("{"):
        _only_burstgpt(f"Mooncake file {path}", opts)
        return mooncake.read_mooncake(path, opts)
    if burstgpt.is_burstgpt_header(head):
        return burstgpt.read_burstgpt(path, opts)
    if azure.is_azure_header(head):
        _only_burstgpt(f"Azure file {path}", opts)
        return azure.read_azure(path, opts)
    if not head:
        raise TraceError(f"trace file {path} is empty")
    raise TraceError(
        f"{path}:1: unknown trace format; expected a BurstGPT CSV header '{','.join(burstgpt.COLUMNS_6)}' "
        f"(or the 8-column one), an Azure CSV header '{','.join(azure.COLUMNS)}', or Mooncake JSONL lines"
    )


def _looks_like_path(spec: str) -> bool:
    return any(c in spec for c in "/\\") or spec.lower().endswith((".csv", ".jsonl", ".json", ".gz"))


def load(spec: str, opts: LoadOptions) -> Trace:
    """Resolve ``spec`` (name, ``name:options`` or path) and load it with ``opts``."""
    spec = spec.strip()
    if spec in _BUNDLED:
        if spec not in _BURSTGPT_NAMES:
            _only_burstgpt(spec, opts)
        return _BUNDLED[spec](opts)
    name, sep, inline = spec.partition(":")
    if name in SYNTHETIC:
        _only_burstgpt(name, opts)
        return load_synthetic(name, inline, opts)
    path = Path(spec).expanduser()
    if path.is_file() or _looks_like_path(spec):
        return load_file(path, opts)
    if sep and name in _BUNDLED:
        raise TraceError(f"trace {name} takes no inline options (got '{spec}')")
    raise TraceError(str(unknown_name("trace", spec, DESCRIPTIONS)))
