"""Capacity planning (rate search, sweeps, replicas behind routers, reports).

``kvsim.plan`` is both this package and the API function ``kvsim.plan(...)`` (kvsim/api.py):
once the package is imported it takes the name ``plan`` on ``kvsim``, so the package itself
is made callable and forwards the call to the API function.
"""

from __future__ import annotations

import importlib
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """``kvsim.plan(...)``: see :func:`kvsim.api.plan`."""
        return importlib.import_module("kvsim.api").plan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
