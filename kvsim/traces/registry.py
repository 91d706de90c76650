"""Trace names, file-format detection and synthetic spec strings.

A spec is one of:

* a registered name (see :data:`DESCRIPTIONS`);
* a synthetic generator with inline options, ``NAME:key=value,key=value``, e.g.
  ``synthetic-gamma:rate=5,cv=3,n=1000,prompt=512,output=128``. Keys are the params-model
  field names or their short aliases (``n``, ``prompt``, ``output``), plus ``seed``;
* a file path, read in the format ``--trace-format`` names (:data:`FORMATS`) or detected by
  :func:`detect`: a first line ``[`` -> a JSON array (ShareGPT conversations; with ``--columns``
  generic objects); ``{`` -> a ``vllm bench serve`` result (one JSON document, or a first
  line with its keys), else JSON lines (``--columns`` -> generic, ``conversations`` ->
  ShareGPT, Mooncake keys -> Mooncake); otherwise a CSV header (``--columns`` -> generic, a
  BurstGPT, Azure or Vidur header). ``.gz`` files are read transparently.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from kvsim.errors import TraceError, unknown_name
from kvsim.specbase import short_repr
from kvsim.traces import azure, burstgpt, mooncake, rag, scbench, sharegpt, synthetic, tabular, tts, vidur, vllm_bench
from kvsim.traces._io import first_line, iter_lines, not_found, utf8_error
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, build_trace, without_rate
from kvsim.traces.values import load_json

#: ``--trace-format`` names -> what they read (docs/traces.md shows each with an example)
FORMATS: dict[str, str] = {
    "auto": "detect from the header or content (default)",
    "burstgpt": "BurstGPT CSV, 6 or 8 columns (Session ID -> sessions)",
    "azure": "Azure LLM inference CSV (TIMESTAMP,ContextTokens,GeneratedTokens)",
    "mooncake": "Mooncake JSON lines (timestamp ms, input_length, output_length, hash_ids)",
    "vidur": "Vidur trace CSV (arrived_at s, num_prefill_tokens, num_decode_tokens; arrived_at optional)",
    "vllm-bench": "vllm bench serve --save-result --save-detailed JSON",
    "sharegpt": "ShareGPT conversations, JSON array or JSON lines (multi-turn sessions)",
    "csv": "any CSV with a header, mapped with --columns",
    "jsonl": "any JSON lines, mapped with --columns",
    "json": "a JSON array of objects, mapped with --columns",
}

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
    "synthetic-burstgpt": "BurstGPT-like lengths (Zipf prompt/output, means ~565 / ~330 tokens) with Gamma arrivals "
    "at BurstGPT's demo defaults (rate 1, cv 1.41; the real sample's CV is 4.46); options rate, cv, n, "
    "prompt_a/min/max, output_a/min/max, seed",
    "synthetic-fixed": "fixed lengths, evenly spaced arrivals (default rate=inf: all at 0 s); "
    "options rate, n, prompt, output, seed",
    "synthetic-best-of-n": "test-time scaling: N samples of one prompt arrive together and share its prefix blocks; "
    "options rate (tasks/s), n, N, prompt, output, fork_s, block, seed",
    "synthetic-cot": "test-time scaling: long chain-of-thought, lognormal output cut at a budget; "
    "options rate (tasks/s), n, prompt, output, output_cv, max_output, block, seed",
    "synthetic-tree": "test-time scaling: ETS-style tree search, width x depth nodes sharing KV along paths; "
    "options rate (tasks/s), n, width, depth, step, retain, level_s, prompt, block, seed",
    "synthetic-rag": "RAG queries: Poisson arrivals, k distinct Zipf-popular chunks from a corpus, then a question; "
    "options rate, n, corpus, k, zipf_a, chunk, question, output, seed",
    "synthetic-scbench": "SCBench-style shared long contexts with follow-up queries, mode=multi-turn|multi-request; "
    "options rate, n, mode, contexts, turns, context, query, output, gap, block, seed",
}

SYNTHETIC: dict[str, type[synthetic._Params]] = {
    "synthetic-poisson": synthetic.PoissonParams,
    "synthetic-gamma": synthetic.GammaParams,
    "synthetic-burstgpt": synthetic.BurstGPTParams,
    "synthetic-fixed": synthetic.FixedParams,
    "synthetic-best-of-n": tts.BestOfNParams,
    "synthetic-cot": tts.CoTParams,
    "synthetic-tree": tts.TreeParams,
    "synthetic-rag": rag.RagParams,
    "synthetic-scbench": scbench.SCBenchParams,
}
#: the generator of each synthetic spec: the ``generate`` of the module defining its params
_GENERATE = {name: sys.modules[params.__module__].generate for name, params in SYNTHETIC.items()}

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
        raise TraceError(f"--trace-model and --log-type (model, log_type) apply only to BurstGPT traces, not to {what}")


def parse_inline(name: str, text: str) -> dict[str, str]:
    """``"rate=5,cv=3"`` -> ``{"rate": "5", "cv": "3"}``; raise TraceError on a malformed item."""
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise TraceError(f"bad option '{item}' in trace spec '{name}:{text}'; expected key=value")
        if key.strip() in options:  # (the last one won silently: a user edits one copy, kvsim reads the other)
            raise TraceError(f"option '{key.strip()}' given twice in trace spec '{name}:{text}'; keep one")
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
            if to_alias[key] in values:  # (an option and its alias: n= and num_requests=)
                raise TraceError(f"option '{key}' of {name} given twice (also as '{to_alias[key]}'); keep one")
            values[to_alias[key]] = value
        else:
            choices = sorted({f.alias or k for k, f in model.model_fields.items()} | {"seed"})
            raise TraceError(f"unknown option '{key}' for {name}; options: {', '.join(choices)}")
    try:  # the spec as written, first: a bad inline value is an error even where a flag overrides it
        model.model_validate(values)
    except ValidationError as err:
        raise TraceError(_validation_line(name, err)) from None
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
    raw = _GENERATE[name](params, rng)
    return build_trace(
        raw, replace(without_rate(opts), seed=seed), name=name, source=synthetic.describe(name, params, seed),
        meta={"format": "synthetic", "params": params.model_dump(), "seed": seed},
    )


def _header_names(line: str) -> tuple[str, ...]:
    try:
        return tuple(c.strip() for c in next(csv.reader([line]), []))
    except csv.Error:
        return ()


def _first_json(path: Path, head: str):
    """The first line parsed as JSON, or None when it is not a complete JSON value."""
    try:
        return json.loads(head)
    except RecursionError:
        raise TraceError(f"{path}:1: not valid JSON (nested too deeply)") from None
    except ValueError:
        return None


def detect(path: Path, opts: LoadOptions) -> tuple[str, object]:
    """The format of a trace file (a FORMATS name) and what was parsed while deciding (or None)."""
    head = first_line(path).lstrip()
    if not head:  # blank first line(s): JSON may start later; a CSV header must be on line 1
        try:
            head = next((text.lstrip() for _, text in iter_lines(path) if text.strip()), "")
        except UnicodeDecodeError:
            raise TraceError(utf8_error(path)) from None
        if not head:
            raise TraceError(f"trace file {path} is empty")
        if not head.startswith(("[", "{")):
            raise TraceError(f"{path}:1: expected a CSV header on the first line, found a blank line")
    if head.startswith("["):
        data = load_json(path)
        if isinstance(data, list) and data and sharegpt.looks_like_sharegpt(data[0]) and opts.columns is None:
            return "sharegpt", data
        if opts.columns is not None:
            return "json", data
        raise TraceError(f"{path}: a JSON array that is not ShareGPT conversations (objects with 'conversations'); "
                         "to read its objects give --columns arrival=KEY,prompt=KEY,output=KEY")
    if head.startswith("{"):
        first = _first_json(path, head)
        if first is None:  # a JSON document over several lines
            data = load_json(path)
            if vllm_bench.is_bench_result(data):
                return "vllm-bench", data
            raise TraceError(f"{path}: a JSON document that is not a vllm bench serve result; expected JSON lines "
                             "(Mooncake, ShareGPT or --columns) or a vllm bench serve --save-detailed JSON")
        if vllm_bench.is_bench_result(first):
            return "vllm-bench", None
        if opts.columns is not None:
            return "jsonl", None
        if sharegpt.looks_like_sharegpt(first):
            return "sharegpt", None
        if isinstance(first, dict) and all(k in first for k in mooncake.FIELDS):
            return "mooncake", None
        keys = ", ".join(list(first)[:12]) if isinstance(first, dict) else type(first).__name__
        raise TraceError(f"{path}:1: unknown JSON lines (keys: {keys}); expected Mooncake keys "
                         f"{', '.join(mooncake.FIELDS)}, ShareGPT 'conversations', or give --columns "
                         "arrival=KEY,prompt=KEY,output=KEY")
    if opts.columns is not None:
        return "csv", None
    names = _header_names(head)
    if burstgpt.is_burstgpt_header(head):
        return "burstgpt", None
    if azure.is_azure_header(head):
        return "azure", None
    if vidur.is_vidur_header(names):
        return "vidur", names
    raise TraceError(
        f"{path}:1: unknown trace format (header {short_repr(head, 80)}); expected a BurstGPT, Azure or Vidur "
        f"CSV header, Mooncake/ShareGPT JSON lines, a vllm bench serve JSON, or give --columns "
        f"(see `kvsim trace formats`)"
    )


#: option -> the formats it applies to
_OPTION_FORMATS = {
    "columns": ("csv", "jsonl", "json"),
    "time_unit": ("csv", "jsonl", "json"),
    "tokenizer": ("sharegpt",),
}
_OPTION_FLAGS = {"columns": "--columns", "time_unit": "--time-unit", "tokenizer": "--tokenizer",
                 "model": "--trace-model", "log_type": "--log-type"}


def _check_options(fmt: str, path: Path, opts: LoadOptions) -> None:
    for key, formats in _OPTION_FORMATS.items():
        if getattr(opts, key) is not None and fmt not in formats:
            raise TraceError(f"{_OPTION_FLAGS[key]} applies to {', '.join(formats)} traces, not to {path} "
                             f"(format {fmt})")
    if fmt != "burstgpt":
        _only_burstgpt(f"{FORMATS.get(fmt, fmt)} file {path}", opts)


def load_file(path: Path, opts: LoadOptions) -> Trace:
    """Load a trace file in ``opts.format`` (default: detected from its first line or content)."""
    fmt = (opts.format or "auto").strip().lower()
    if fmt not in FORMATS:
        raise TraceError(str(unknown_name("trace format", fmt, FORMATS)))
    if not path.is_file():
        raise not_found(path)
    parsed = None
    if fmt == "auto":
        fmt, parsed = detect(path, opts)
    _check_options(fmt, path, opts)
    if fmt == "burstgpt":
        return burstgpt.read_burstgpt(path, opts)
    if fmt == "azure":
        return azure.read_azure(path, opts)
    if fmt == "mooncake":
        return mooncake.read_mooncake(path, opts)
    if fmt == "vidur":
        return vidur.read_vidur(path, opts, parsed or _header_names(first_line(path)))
    if fmt == "vllm-bench":
        return vllm_bench.read_vllm_bench(path, opts, parsed)
    if fmt == "sharegpt":
        return sharegpt.read_sharegpt(path, opts, parsed)
    return tabular.read_generic(path, opts, fmt, parsed)


def _looks_like_path(spec: str) -> bool:
    return any(c in spec for c in "/\\") or spec.lower().endswith((".csv", ".jsonl", ".json", ".gz"))


def load(spec: str, opts: LoadOptions) -> Trace:
    """Resolve ``spec`` (name, ``name:options`` or path) and load it with ``opts``."""
    spec = spec.strip()
    file_only = [flag for key, flag in (("format", "--trace-format"), ("columns", "--columns"),
                                         ("time_unit", "--time-unit"), ("tokenizer", "--tokenizer"))
                 if getattr(opts, key) is not None and (key != "format" or opts.format.strip().lower() != "auto")]
    name, sep, inline = spec.partition(":")
    if (name not in _BUNDLED and name not in SYNTHETIC and (name.lower() in _BUNDLED or name.lower() in SYNTHETIC)
            and not Path(spec).expanduser().is_file()):  # trace names in any case (BurstGPT, Synthetic-Poisson)
        name = name.lower()
        spec = name + sep + inline
    if spec in _BUNDLED or name in SYNTHETIC:
        if file_only:
            raise TraceError(f"{', '.join(file_only)} applies to trace files, not to the named trace '{name}'")
    if spec in _BUNDLED:
        if spec not in _BURSTGPT_NAMES:
            _only_burstgpt(spec, opts)
        return _BUNDLED[spec](opts)
    if name in SYNTHETIC:
        _only_burstgpt(name, opts)
        if opts.arrivals is not None:
            raise TraceError(f"--arrivals applies to trace files and named traces, not to {name} "
                             "(give its rate and cv inline, e.g. synthetic-gamma:rate=4,cv=2)")
        return load_synthetic(name, inline, opts)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise TraceError(f"trace {spec}: is a directory (expected a trace file or a name from `kvsim trace list`)")
    if path.is_file() or _looks_like_path(spec):
        return load_file(path, opts)
    if sep and name in _BUNDLED:
        raise TraceError(f"trace {name} takes no inline options (got '{spec}')")
    raise TraceError(str(unknown_name("trace", spec, DESCRIPTIONS)))
