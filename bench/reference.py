"""The reference every speed figure is a ratio to: the bare fp32 model of a real
architecture (random weights: none can be downloaded here, and the compute is the same),
given a preprocessed photo, run on a thread of its own."""

from __future__ import annotations

import atexit
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

from engine.config import DEFAULT_CONFIG_PATH, load_settings
from engine.embedder import Embedder, ModelSpec
from engine.precision import Precision, resolve_precision

# The precision the engine runs in here: config.toml's ("auto"), resolved for a CPU: int8.
# `load_embedder` keeps int8 only where it agrees with fp32 on the loaded weights; the
# random-init weights benched here do (cosine 0.9998-0.9999, bench/precision.py's load
# check), so the benches serve int8 as the product would.
SERVED_PRECISION = resolve_precision(
    load_settings(DEFAULT_CONFIG_PATH, environ={}).model.precision, "cpu"
)


# Random weights are new every run: their int8 towers go to a folder of this process's,
# not the user's cache.
INT8_CACHE = Path(tempfile.mkdtemp(prefix="fashionbot-bench-int8-"))
atexit.register(shutil.rmtree, INT8_CACHE, ignore_errors=True)


def random_embedder(architecture: str, precision: Precision = "fp32") -> Embedder:
    """The real architecture with random weights, wrapped exactly as production wraps it."""
    model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=None)
    model.eval()
    tokenizer = open_clip.get_tokenizer(architecture)
    spec = ModelSpec(architecture, architecture, None)
    return Embedder(
        model, preprocess, tokenizer, spec, "cpu", precision=precision, int8_cache=INT8_CACHE
    )


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bare_model_input(embedder: Embedder, photo: bytes) -> torch.Tensor:
    """The photo as a batch of one, preprocessed and scaled: all the bare model is given."""
    pixels = embedder.preprocess_image(Image.open(io.BytesIO(photo)).convert("RGB"))
    return embedder.model_input(pixels.unsqueeze(0))


# torch keeps an OpenMP thread team per calling thread, and the same forward pass measured
# 113-150 ms depending on the thread that ran it. The engine runs the model on its own
# worker thread; the bare reference gets one too, so both sides pay the same.
BARE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare-model")


def on_bare_thread(run: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: BARE_THREAD.submit(run).result()


def bare_forward(embedder: Embedder, photo: bytes) -> Callable[[], Any]:
    """One fp32 `encode_image` of `photo` at batch 1 on the bare thread, as a callable."""
    tensor = bare_model_input(embedder, photo)

    @on_bare_thread
    def run() -> None:
        with torch.inference_mode():
            embedder.model.encode_image(tensor)

    return run
