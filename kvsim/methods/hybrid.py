"""Hybrid (attention + Mamba-2) models under any KV method.

Every method prices the attention layers only (``ModelSpec.attention_layers``: its ``L``); the
Mamba-2 layers hold no KV but one constant recurrent state per sequence
(:attr:`kvsim.costmodel.deployment.Deployment.state_bytes_per_seq`), which this module adds to a
request's GPU residency once it holds any token::

    kv_bytes(n) = method.kv_bytes(n) + state_bytes_per_seq * [n > 0]

The state's traffic and the scan are in the shared linear cost
(:func:`kvsim.costmodel.transformer.ssm_parts`). Residency is then not proportional to tokens, so
prefix blocks are not shared (a prefix's KV alone does not restore the recurrent state).
"""

from __future__ import annotations

from kvsim.costmodel.cost import Num
from kvsim.methods._common import arr, has
from kvsim.methods.base import KVMethod, Residency

_CLASSES: dict[type, type] = {}


def with_recurrent_state(cls: type[KVMethod]) -> type[KVMethod]:
    """``cls`` whose ``kv_bytes`` adds the hybrid model's recurrent state (one subclass per method)."""
    if cls not in _CLASSES:
        def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
            r = cls.kv_bytes(self, n_tokens, n_prompt)
            return Residency(gpu_bytes=r.gpu_bytes + self.dep.state_bytes_per_seq * has(arr(n_tokens)),
                             host_bytes=r.host_bytes)

        _CLASSES[cls] = type(cls.__name__, (cls,), {"kv_bytes": kv_bytes, "linear_residency": False,
                                                     "__module__": cls.__module__, "__doc__": cls.__doc__})
    return _CLASSES[cls]
