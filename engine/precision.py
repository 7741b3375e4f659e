"""The arithmetic the model runs in: `model.precision` resolved for the device at hand.

`auto` is fp16 on CUDA and, on CPUs, int8 where it agrees with fp32 on the weights
actually loaded, else fp32. int8 runs the image tower's matrix products in int8 through
ONNX Runtime (weights int8 ahead of time, activations quantised per pass;
engine/onnx_int8.py): on this project's 2-core Intel Xeon, ViT-B-32 and ViT-B-16 forward
passes took 0.39-0.50x of torch fp32's time (docs/benchmarks.md, section 7). Real CLIP
ViTs have activation outliers that random-init ones lack, and int8 can lose them, so
`auto` measures at load time: a few bundled photos embedded both ways, int8 kept only if
every one stays within `quantize.MIN_COSINE` of fp32 (`load_embedder` logs the choice and
the lowest cosine). An explicit "int8" always quantises.

bf16 on a CPU was measured, not assumed: on the same Xeon, which has native bf16
instructions (avx512_bf16; no AMX exposed), torch 2.14's bf16 matrix products ran slower
than fp32 (ViT-B-32 0.5-0.8x), so `auto` does not pick it; set "bf16" on a CPU where it
measures faster (AMX). Vectors stay comparable across precisions (bf16: cosine to fp32
>= 0.996 on real weights), so an index built in one is served in another. Weights are
cast, not autocast: autocast was measured 2x slower than fp32 at batch 16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16", "int8"]
PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16", "int8"]

# The dtype of the model's input and activations (int8 keeps fp32 activations between
# its quantised Linear layers).
DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.float32,
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
    """`auto`: fp16 on CUDA, int8 on CPUs (load_embedder then keeps it only where it
    agrees with fp32 on the loaded weights), else fp32. fp16 on a CPU and int8
    off one are refused, each with what to set instead."""
    if setting == "auto":
        if device_type == "cuda":
            return "fp16"
        return "int8" if device_type == "cpu" else "fp32"
    if setting == "fp16" and device_type == "cpu":
        raise PrecisionError(
            'model.precision = "fp16" runs emulated (slower than fp32) on a CPU: '
            'use "int8", "bf16" or "auto" there, or set model.device to a GPU.'
        )
    if setting == "int8" and device_type != "cpu":
        raise PrecisionError(
            f'model.precision = "int8" runs on CPUs only (ONNX Runtime\'s CPU kernels; on '
            f'{device_type} the model runs in torch): use "fp16" or "auto" there, or set '
            'model.device = "cpu".'
        )
    return setting
