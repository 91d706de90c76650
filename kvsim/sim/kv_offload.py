"""The ``--kv-offload`` setting: capacities of the KV offload tiers (:mod:`kvsim.sim.kv_tiers`) and
its parsing (``host=64GiB,nvme=1TiB[,drive=pm9a3]``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kvsim.errors import ConfigError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
MAX_TIER_BYTES = 2**50  # 1 PiB


class KVOffload(BaseModel):
    """Capacities of the offload tiers (bytes per replica) and the NVMe drive's spec name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_bytes: float = Field(0.0, ge=0, le=MAX_TIER_BYTES, allow_inf_nan=False,
                              description="host DRAM KV tier (vLLM's offloading CPU buffer)")
    nvme_bytes: float = Field(0.0, ge=0, le=MAX_TIER_BYTES, allow_inf_nan=False, description="local NVMe KV tier")
    nvme_drive: str = Field("pm9a3", description="storage spec of the NVMe drive (kvsim/hardware/storage)")
    load: Literal["async", "sync"] = Field(
        "async", description="async: a request waits alone while its KV loads (vLLM v1's offloading connector); "
                             "sync: the step that admits it waits for the load")

    @model_validator(mode="after")
    def _nvme_needs_host(self) -> "KVOffload":
        if self.nvme_bytes > 0 and self.host_bytes <= 0:
            raise ValueError("an NVMe tier needs a host tier (KV reaches NVMe through host memory)")
        return self

    @property
    def enabled(self) -> bool:
        return self.host_bytes > 0


def parse_size(text: str) -> float:
    """``"64GiB"`` -> 68719476736.0 bytes (SI kB/MB/GB/TB and binary KiB/MiB/GiB/TiB; plain numbers are bytes)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"bad size {text!r}: expected a number with a unit, e.g. 64GiB, 1TiB, 500GB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 0 <= value <= MAX_TIER_BYTES:
        raise ConfigError(f"size {text!r} out of range (0 to 1 PiB)")
    return value


def parse_offload(text: str) -> KVOffload:
    """``"host=64GiB,nvme=1TiB[,drive=pm9a3][,load=async|sync]"`` -> :class:`KVOffload` (the ``--kv-offload`` flag)."""
    fields: dict = {}
    names = {"host": "host_bytes", "nvme": "nvme_bytes", "drive": "nvme_drive", "load": "load"}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in names or not value.strip():
            raise ConfigError(f"bad --kv-offload item {item.strip()!r}: expected host=SIZE, nvme=SIZE, drive=NAME or "
                              "load=async|sync")
        if names[key] in fields:
            raise ConfigError(f"--kv-offload: {key} given twice")
        if key == "load" and value.strip().lower() not in ("async", "sync"):
            raise ConfigError(f"--kv-offload: load={value.strip()!r}: expected async or sync")
        fields[names[key]] = (value.strip() if key == "drive" else value.strip().lower() if key == "load"
                              else parse_size(value))
        if key in ("host", "nvme") and fields[names[key]] == 0:
            raise ConfigError(f"--kv-offload: {key}={value.strip()}: a tier needs a size above 0 (leave --kv-offload out "
                              "for no tiers)")
    if "host_bytes" not in fields and "nvme_bytes" not in fields:  # (drive= or load= alone: silently no tiers)
        raise ConfigError(f"--kv-offload {text.strip()!r}: no host tier; give host=SIZE (e.g. host=64GiB), the tier "
                          "every offloaded block goes through")
    try:
        return KVOffload(**fields)
    except ValueError as err:  # pydantic ValidationError
        msg = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
        raise ConfigError(f"--kv-offload: {msg.removeprefix('Value error, ')}") from None
