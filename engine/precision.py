"""The arithmetic the model runs in: `model.precision` resolved for the device at hand.

`auto` is fp16 on CUDA and fp32 on CPUs. bf16 on a CPU was measured, not assumed
(docs/benchmarks.md, section 7): on this project's 2-core Intel Xeon machine, which has
native bf16 instructions (avx512_bf16; no AMX exposed), torch 2.14's bf16 matrix products
ran slower than fp32 (ViT-B-32 0.5-0.8x), so `auto` does not pick it; set "bf16" on a CPU
where it measures faster (AMX). Vectors stay comparable across precisions (cosine to fp32 >= 0.996
on real weights), so an index built in one is served in another. Weights are cast, not
autocast: autocast was measured 2x slower than fp32 at batch 16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16"]

DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
# /proc/cpuinfo flags (x86) and features (aarch64) that mean native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = Path("/proc/cpuinfo")


class PrecisionError(ValueError):
    """A precision this device cannot run well; the message says what to set instead."""


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's capability flags as the kernel reports them; empty where it does not."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def resolve_precision(setting: PrecisionSetting, device_type: str) -> Precision:
    """`auto`: fp16 on CUDA, else fp32 (see the module's note on bf16). fp16 on a CPU is
    refused: CPUs without fp16 units emulate it, slower than fp32."""
    if setting == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if setting == "fp16" and device_type == "cpu":
        raise PrecisionError(
            'model.precision = "fp16" runs emulated (slower than fp32) on a CPU: '
            'use "bf16" or "auto" there, or set model.device to a GPU.'
        )
    return setting
