"""Registry of KV-cache methods: one module each, one line here.

``make_method("kivi", dep, {"bits": 4})`` builds a method for a deployment; unknown
names and bad params raise one-line errors.
"""

from __future__ import annotations

from pydantic import ValidationError

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError, SpecError, unknown_name
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.methods.a2ats import A2ATS
from kvsim.methods.cacheblend import CacheBlend
from kvsim.methods.cake import CAKE
from kvsim.methods.compose import compose
from kvsim.methods.duoattention import DuoAttention
from kvsim.methods.elastic import ElasticCache
from kvsim.methods.ems import EMS
from kvsim.methods.full import Full
from kvsim.methods.gear import GEAR
from kvsim.methods.h2o import H2O
from kvsim.methods.headmerge import HeadMerge
from kvsim.methods.infllm import InfLLM
from kvsim.methods.kivi import KIVI
from kvsim.methods.kvcrush import KVCrush
from kvsim.methods.llmlingua import LLMLingua
from kvsim.methods.locret import Locret
from kvsim.methods.magicpig import MagicPIG
from kvsim.methods.mikv import MiKV
from kvsim.methods.mla import MLA
from kvsim.methods.moba import MoBA
from kvsim.methods.nsa import NSA
from kvsim.methods.oracle import OracleSampling
from kvsim.methods.prefix import Prefix
from kvsim.methods.pyramidkv import PyramidKV
from kvsim.methods.quest import Quest
from kvsim.methods.razorattention import RazorAttention
from kvsim.methods.snapkv import SnapKV
from kvsim.methods.streamingllm import StreamingLLM
from kvsim.methods.topk import TopK
from kvsim.methods.xecomla import XEcoMLA
from kvsim.methods.zipcache import ZipCache
from kvsim.specbase import format_validation_error

REGISTRY: dict[str, type[KVMethod]] = {
    "full": Full,
    "kivi": KIVI,
    "gear": GEAR,
    "zipcache": ZipCache,
    "magicpig": MagicPIG,
    "quest": Quest,
    "topk": TopK,
    "h2o": H2O,
    "streamingllm": StreamingLLM,
    "snapkv": SnapKV,
    "pyramidkv": PyramidKV,
    "duoattention": DuoAttention,
    "razorattention": RazorAttention,
    "infllm": InfLLM,
    "mla": MLA,
    "llmlingua": LLMLingua,
    "prefix": Prefix,
    "cacheblend": CacheBlend,
    "mikv": MiKV,
    "cake": CAKE,
    "oracle": OracleSampling,
    "headmerge": HeadMerge,
    "xecomla": XEcoMLA,
    "nsa": NSA,
    "moba": MoBA,
    "locret": Locret,
    "elastic": ElasticCache,
    "ems": EMS,
    "a2ats": A2ATS,
    "kvcrush": KVCrush,
}

__all__ = ["REGISTRY", "make_method", "method_names", "parse_method_spec", "split_methods", "KVMethod", "MethodParams", "Residency"]


def method_names() -> list[str]:
    return list(REGISTRY)


def split_methods(values: list[str]) -> list[str]:
    """Split ``--method`` values into method specs.

    ``"full,kivi:bits=4,group=64,magicpig"`` -> ``["full", "kivi:bits=4,group=64", "magicpig"]``
    (a comma item holding ``=`` but no ``:`` before any ``+`` continues the previous method's params,
    so ``kivi:bits=4,group=64+quest:page_size=32`` stays one composed spec);
    ``"all"`` expands to every registered method with default params.
    """
    out: list[str] = []
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            head = item.split("+", 1)[0]
            if "=" in head and ":" not in head:
                if not out:
                    raise ConfigError(f"--method: parameter '{item}' comes before any method name")
                out[-1] += "," + item
            elif item.lower() == "all":
                out.extend(method_names())
            else:
                out.append(item)
    if not out:
        raise ConfigError("--method: no method given")
    return out


def parse_method_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"kivi:bits=4,group=64"`` -> ``("kivi", {"bits": "4", "group": "64"})``."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    if rest:
        for item in rest.split(","):
            k, eq, v = item.partition("=")
            if not eq or not k.strip():
                raise SpecError(f"method '{spec}': expected key=value pairs after ':', got '{item}'")
            if k.strip().lower() in {p.lower() for p in params}:  # (the last one won, silently: user audit)
                raise SpecError(f"'{spec}': {k.strip()} given twice")
            params[k.strip()] = v.strip()
    return name.strip().lower(), params


def make_method(spec: str, dep: Deployment, params: dict | None = None) -> KVMethod:
    """Build the method named by ``spec`` (``name`` or ``name:key=value,...``) for ``dep``;
    ``a+b`` composes a storage and a selection method (:mod:`kvsim.methods.compose`)."""
    if "+" in spec:
        items = [s.strip() for s in spec.split("+")]
        if not all(items):
            raise SpecError(f"method '{spec}': empty method name around '+'")
        if params:
            raise SpecError(f"method '{spec}': give a composition's parameters inline (e.g. kivi:bits=4+quest:page_size=32)")
        return compose(spec.strip(), items, [make_method(s, dep) for s in items], REGISTRY)
    name, inline = parse_method_spec(spec)
    cls = REGISTRY.get(name)
    if cls is None:
        raise unknown_name("method", name, REGISTRY)
    by_lower = {f.lower(): f for f in cls.Params.model_fields}  # parameter names in any case (KIVI:BITS=4, magicpig:k=10)
    data = {(k if k in cls.Params.model_fields else by_lower.get(k.lower(), k)): v for k, v in {**inline, **(params or {})}.items()}
    try:
        p = cls.Params.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, f"method {name}", known=list(cls.Params.model_fields),
                                                top_level="")) from None
    return cls(dep, p)
