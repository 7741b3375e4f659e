"""The image tower in int8 on a CPU, run by ONNX Runtime: what `model.precision = "int8"`
serves (and `auto` where it agrees with fp32: engine/quantize.py).

Why not torch's own dynamic quantisation (torch.ao), which this replaced: it swaps only
`nn.Linear` modules, so the attention's input projections (`nn.MultiheadAttention`'s
in_proj, about a quarter of a ViT's weights) stayed fp32, and it ran ViT-B-16 at batch 1
in 0.73-0.76x of fp32's time on this project's 2-core Xeon. Exported to ONNX, every matrix
product of the tower is one MatMul node, and ONNX Runtime's dynamic quantisation turns
them all into int8 ones with VNNI kernels: 0.39-0.41x of torch fp32 at batch 1 and
0.41-0.50x at batch 16, cosine to fp32 >= 0.9998 on random-init ViT-B-32/B-16
(docs/benchmarks.md, section 7). Only MatMul nodes are quantised: dynamic int8
convolutions are slow in ONNX Runtime and lose accuracy, and a ViT's one convolution (its
patch embedding) is small.

Activations are quantised per tensor, per call, as with torch.ao: a photo's vector can
move within rounding with the other photos of its forward pass.

Exporting (torch.onnx, ~20 s for ViT-B-32) and quantising (~5 s) happen once per set of
weights: the int8 file is cached under the model cache, named by a digest of every weight
of the image tower, its input size and the versions of the libraries that wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from engine.onnx_session import cpu_session

log = logging.getLogger(__name__)

# Bumped when the way the file is written changes, so old cache files are not reused.
FILE_FORMAT = 1
# Int8 files kept in a cache folder, the most recently used (a ViT-B's is ~90 MB): a shop
# that changes its model, or a benchmark of random weights, does not fill the disk.
KEPT_FILES = 4
INPUT_NAME = "pixels"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fashionbot" / "int8"


class Int8Unavailable(RuntimeError):
    """This image tower cannot be exported or quantised; the message says why."""


def has_linear_layers(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Linear) for m in module.modules())


def cache_key(tower: torch.nn.Module, image_size: int) -> str:
    """A digest of every weight of the tower and of what writes its int8 file."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        f"{FILE_FORMAT}|{image_size}|{torch.__version__}|{onnxruntime.__version__}".encode()
    )
    for name, tensor in sorted(tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class OnnxInt8Tower:
    """`tower(batch)` -> features, as the torch tower gives them (float32, not normalised).
    `model`: the int8 ONNX file (its path, or its bytes where it could not be cached)."""

    def __init__(self, model: Path | bytes, threads: int) -> None:
        self.model_file = model if isinstance(model, Path) else None
        self._session = cpu_session(model, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        (features,) = self._session.run(None, {INPUT_NAME: pixels})
        return torch.from_numpy(np.asarray(features))


def int8_tower(
    tower: torch.nn.Module, image_size: int, cache_root: Path, threads: int
) -> OnnxInt8Tower:
    """The tower in int8: from the cache, or exported, quantised and cached (a cache that
    cannot be written costs the export again next start, with a warning, nothing more)."""
    if not has_linear_layers(tower):
        raise Int8Unavailable(
            "its image tower has no matrix products for int8 to quantise (a convolutional "
            "model: fp32 is as fast)"
        )
    model_file = cache_root / f"{cache_key(tower, image_size)}.onnx"
    if model_file.is_file():
        with contextlib.suppress(OSError):
            os.utime(model_file)  # used: the last to be pruned
        return OnnxInt8Tower(model_file, threads)
    started = time.perf_counter()
    log.info("preparing the int8 image tower (once for these weights, ~30 s for a ViT-B)")
    with tempfile.TemporaryDirectory(prefix="fashionbot-int8-") as scratch:
        written = Path(scratch) / "int8.onnx"
        _export_int8(tower, image_size, written)
        model = _cached(written.read_bytes(), model_file)
    log.info("int8 image tower ready in %.0f s", time.perf_counter() - started)
    return OnnxInt8Tower(model, threads)


def _cached(model: bytes, target: Path) -> Path | bytes:
    """`model` written to `target` (atomically: other processes may be writing it too);
    the bytes themselves where the cache is not writable."""
    partial = target.with_suffix(f".{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(model)
        partial.replace(target)
    except OSError as exc:
        log.warning("cannot cache the int8 image tower in %s (%s)", target.parent, exc)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return model
    prune(target.parent, spare=target)
    return target


def prune(cache_root: Path, keep: int = KEPT_FILES, spare: Path | None = None) -> None:
    """Remove all but the `keep` most recently used int8 files, and never `spare` (the
    file this process is about to open; a session already open on a removed file keeps
    its copy in memory)."""

    def last_used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another process pruning too
            return 0.0

    files = sorted(cache_root.glob("*.onnx"), key=last_used, reverse=True)
    for old in files[keep:]:
        if old == spare:
            continue
        with contextlib.suppress(OSError):
            old.unlink()
            log.info("removed the int8 image tower %s (least recently used)", old.name)


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """torch.onnx reports progress on stdout and warns about each operator it rewrites;
    onnxscript and the quantiser log every pass and tensor at INFO, some on the root
    logger. The outcome is logged by `int8_tower` instead. Runs once, at start."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _export_int8(tower: torch.nn.Module, image_size: int, out: Path) -> None:
    fp32 = out.with_name("fp32.onnx")
    example = torch.zeros(2, 3, image_size, image_size)
    try:
        with _libraries_quiet():
            program = torch.onnx.export(
                tower.eval(),
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
            if program is None:
                raise Int8Unavailable("torch.onnx.export returned no program")
            program.save(str(fp32))
            quantize_dynamic(
                fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
            )
    except Int8Unavailable:
        raise
    except Exception as exc:  # the exporter raises many types for unsupported operators
        log.debug("int8 export failed", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Int8Unavailable(f"the image tower could not be exported to ONNX: {reason}") from None
