"""kvsim: analytical performance simulator and roofline cost model for LLM inference
under KV-cache compression.

The core (specs, cost model, methods, estimate, simulator) imports without torch;
only :mod:`kvsim.validate` needs it.
"""

__version__ = "0.1.0"
