"""The garment finder's network run by ONNX Runtime: what the engine serves.

Measured on this project's 2-core Xeon (bench/finder_speed.py, docs/benchmarks.md section
8), a street photo at 288 px: the TorchScript-frozen network took 27 ms on one torch
thread, and as served it ran on the process's torch threads (both cores), where it took
24-67 ms, slowest when the other core was busy; ONNX Runtime's fp32 kernels take 21 ms
on one thread of their own, the other core left to the bot and the next photos.
The outputs agree with torch's to 1e-5.

The network is exported at load, in memory, by torch's TorchScript-based exporter: half a
second, with the photo's height and width left free (any multiple of the trunk's stride).
torch's newer exporter (torch.export) took 700 s on the same network with free sizes.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.onnx_session import cpu_session

# One intra-op thread: two took 18.6 ms against 20.8 ms (median) and were slower at the
# 90th percentile, with the second core taken from the bot's own work.
FINDER_THREADS = 1
INPUT_NAME = "pixels"


class OnnxFinderNetwork:
    """`network(pixels)` -> (cell probabilities, look probability) as torch tensors, like
    the torch network it was exported from."""

    def __init__(self, model: bytes, threads: int = FINDER_THREADS) -> None:
        self._session = cpu_session(model, threads)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        probabilities, look = self._session.run(None, {INPUT_NAME: array})
        return torch.from_numpy(np.asarray(probabilities)), torch.from_numpy(np.asarray(look))


def onnx_network(network: nn.Module, example: torch.Tensor) -> OnnxFinderNetwork:
    """`network` exported on `example` (1x3xHxW) with H and W free. Raises what the
    exporter or ONNX Runtime raise (the caller falls back to torch)."""
    with (
        tempfile.TemporaryDirectory(prefix="fashionbot-finder-") as scratch,
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        exported = Path(scratch) / "finder.onnx"
        # The TorchScript-based exporter is deprecated in favour of torch.export, which
        # this network's free input sizes keep busy for minutes (see above).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            network.eval(),
            (example,),
            exported,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=["probabilities", "look"],
            dynamic_axes={INPUT_NAME: {2: "height", 3: "width"}},
            opset_version=17,
        )
        return OnnxFinderNetwork(exported.read_bytes())
