"""PyramidKV: pyramidal per-layer budgets with SnapKV-style selection (Cai et al., 2024;
METHODS.md 1.7, from the code).

With mean budget ``C`` per layer (window ``w`` included) and ``C' = C - w``::

    min = C' / beta,   max = 2 C' - min,   c_l = max - l (max - min) / (L - 1) + w,   l = 0..L-1

so lower layers keep more (layer 0: ``max + w``) and the mean over layers is exactly ``C``.
The reference code (``PyramidKVCluster.update_kv``) keeps the mean at ``min(P, C)`` for every
prompt length ``P``: below ``C`` it keeps the whole prompt, below ``2 C'`` a uniform ``C``, and
above, when ``max + w`` would exceed ``P``, it caps the top at ``P - w`` and raises the bottom to
``2 C' - (P - w)`` (the mean stays ``C``). Every layer's kept prompt tokens plus every generated
token are resident and read by decode (averaged over layers, which prices the same bytes and
FLOPs): ``min(P, C) + g`` per layer. Prefill is full attention plus SnapKV's voting with window ``w`` and pool ``k``.
Defaults: beta = 20, w = 64, k = 5 (avgpool) from the code; C = 1024 to match SnapKV.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.methods._common import split_prompt
from kvsim.methods.base import WindowedParams
from kvsim.methods.snapkv import SnapKV
from kvsim.specbase import Float, Int


class PyramidKVParams(WindowedParams):
    capacity: Int = Field(1024, gt=0)
    """mean tokens kept per head and layer, window included."""
    beta: Float = Field(20.0, gt=1)
    """ratio of the top layer's budget to min (code default 20)."""
    window: Int = Field(64, gt=0)
    """observation window (code default 64)."""
    kernel: Int = Field(5, gt=0)
    """pooling kernel (code default 5)."""


class PyramidKV(SnapKV):
    name = "pyramidkv"
    mla_extrapolated = "per-head selection is priced as selection of whole latent rows"
    summary = "PyramidKV: per-layer budgets decreasing linearly with depth (mean C = 1024), SnapKV selection"
    Params = PyramidKVParams  # type: ignore[assignment]
    role = "selection"  # composes with a storage method (kvsim.methods.compose)

    def resident_layer_mean(self, n, n_prompt=None) -> np.ndarray:
        """Tokens resident per layer, averaged over layers: ``min(P, C) + g`` (module docstring; before,
        ``mean_l min(P, c_l)``, 22% low at P = 1,000 with C = 1,024)."""
        p, g = split_prompt(n, n_prompt)
        return np.minimum(p, float(self.params.capacity)) + g

    def layer_capacities(self) -> np.ndarray:
        p, L = self.params, self.dep.model.attn_layers
        c = float(p.capacity - p.window)
        lo = c / p.beta
        hi = 2.0 * c - lo
        steps = np.arange(L, dtype=np.float64) * ((hi - lo) / (L - 1) if L > 1 else 0.0)
        return hi - steps + p.window if L > 1 else np.array([float(p.capacity)])
