"""What a simulation result depends on (``summary["provenance"]``): kvsim's version, the method
with every parameter, the deployment, the efficiencies' origin, and a sha256 of each spec as
loaded, so that two results can be told apart or matched without rerunning them."""

from __future__ import annotations

import hashlib
import json

from kvsim import __version__
from kvsim.costmodel.deployment import Deployment
from kvsim.methods.base import KVMethod
from kvsim.traces.base import Trace


def _sha256(spec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def provenance(dep: Deployment, method: KVMethod, trace: Trace) -> dict:
    """What a result depends on: kvsim's version, the method with every parameter, the
    deployment, the efficiencies' origin, and a sha256 of each spec as loaded (canonical JSON)."""
    s = dep.system
    return {
        "kvsim_version": __version__,
        "method": {"name": method.name, "params": method.params.model_dump(mode="json")},
        "deployment": {"system": s.name, "gpu": s.gpu.name, "host": s.host.name, "gpus": s.num_gpus, "tp": dep.tp,
                       "weight_dtype": dep.weight_dtype, "kv_dtype": method.dep.kv_dtype, "act_dtype": dep.act_dtype,
                       "gpu_memory_utilization": dep.gpu_memory_utilization,
                       **({} if dep.expert_offload is None else {"expert_offload": dep.expert_offload.model_dump()})},
        "cost_model": {"calibration": s.calibration, "efficiencies_source": s.eff.source},
        "trace": {"name": trace.name, "source": getattr(trace, "source", None), "requests": len(trace)},
        "spec_sha256": {"gpu": _sha256(s.gpu), "host": _sha256(s.host), "system": _sha256(s.spec),
                        "gpu_host_link": _sha256(s.gpu_host_link), "gpu_gpu_link": _sha256(s.gpu_gpu_link),
                        "efficiencies": _sha256(s.eff), "model": _sha256(dep.model)},
    }
