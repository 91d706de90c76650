"""Numeric formats and their storage size.

This table is the single place where "bytes per element" lives: every weight, KV or
activation size in kvsim is ``elements * bits(dtype) / 8``. KV compression methods
change the KV dtype (KIVI 2/4-bit) or add metadata on top; nothing else hard-codes
"2 bytes per float".
"""

from __future__ import annotations

from typing import Literal

from kvsim.errors import unknown_name

DType = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "int4", "int2"]

#: storage bits per element
_BITS: dict[str, float] = {
    "fp32": 32,
    "tf32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    # 4-bit floats (e2m1): NVFP4 adds an fp8 scale per 16 elements (+0.5 bit), MXFP4 an 8-bit scale
    # per 32 (+0.25 bit); like int4's group scales, block scales are not counted.
    "fp4": 4,
    "int4": 4,
    "int2": 2,
}

#: dtype used for tensor-core math when a tensor of this storage dtype is multiplied.
#: Weight-only int4 (AWQ/GPTQ-style) dequantizes to fp16 before the MMA; fp8 / int8 / fp4 run
#: on tensor cores of that dtype where the GPU has them (Deployment.gemm_dtype decides).
COMPUTE_DTYPE: dict[str, str] = {
    "fp32": "fp32",
    "tf32": "tf32",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp8": "fp8",
    "int8": "int8",
    "fp4": "fp4",
    "int4": "fp16",
    "int2": "fp16",
}


#: other spellings users write (vLLM's ``--dtype`` / ``--kv-cache-dtype``, torch's names) -> kvsim's
SPELLINGS: dict[str, str] = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                             "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp8e4m3": "fp8", "fp8e5m2": "fp8", "nvfp4": "fp4"}


def canonical_dtype(name: str) -> str:
    """kvsim's name of dtype ``name``, any case and vLLM's spellings accepted (``BF16``,
    ``bfloat16``, ``fp8_e4m3`` -> ``bf16``, ``bf16``, ``fp8``); ``auto`` stays ``auto``; anything
    else is returned as written (``bits`` then names the choices)."""
    key = name.strip().lower()
    key = SPELLINGS.get(key, key)
    return key if key in _BITS or key == "auto" else name


def bits(dtype: str) -> float:
    """Storage bits per element of ``dtype``."""
    try:
        return _BITS[dtype]
    except KeyError:
        raise unknown_name("dtype", dtype, _BITS) from None


def nbytes(dtype: str) -> float:
    """Storage bytes per element of ``dtype`` (may be fractional: int4 = 0.5)."""
    return bits(dtype) / 8.0


def all_dtypes() -> list[str]:
    return list(_BITS)
