"""``kvsim validate``: how far to trust the cost model.

* microbenchmarks (torch; :mod:`kvsim.validate.runner` and the ``bench_*`` modules) time
  kernels at a model's shapes and record each kernel's *work* as kvsim :class:`~kvsim.costmodel.cost.Part` s;
* :mod:`kvsim.validate.fit` fits per-op-class efficiencies and per-launch overheads to those
  timings (scipy ``least_squares`` on log-time residuals) and writes a calibration file;
* :mod:`kvsim.validate.compare` reports predicted vs measured per kernel, before and after;
* :mod:`kvsim.validate.e2e` replays a trace through a real torch serving loop and through
  ``kvsim.sim.replica.simulate``;
* :mod:`kvsim.validate.papers` reproduces published measurements (no torch);
* :mod:`kvsim.validate.replay` replays a real serving run's per-request log (read by the
  ``runlog*`` modules) through the simulator and states the error per metric (no torch).

Only the benchmark, fit and e2e modules import torch / scipy, and only inside functions or
in modules imported by those commands: ``import kvsim.validate`` stays light.
"""

from kvsim.errors import KvsimError

TORCH_MISSING = "kvsim validate {cmd} needs torch: pip install 'kvsim[validate]' (CPU: pip install torch==2.13.0)"


def require_torch(cmd: str):
    """Import torch or raise a one-line :class:`~kvsim.errors.KvsimError`."""
    try:
        import torch  # lazy: torch is optional (extra [validate]); this checks for it
    except ImportError:
        raise KvsimError(TORCH_MISSING.format(cmd=cmd)) from None
    return torch
