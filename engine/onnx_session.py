"""ONNX Runtime sessions as the engine runs them on a CPU: the int8 image tower
(engine/onnx_int8.py) and the garment finder (engine/finder_onnx.py)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime


def cpu_session(model: Path | bytes, threads: int) -> onnxruntime.InferenceSession:
    """A session on `threads` intra-op threads (one pass at a time: no inter-op pool)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Threads spin (busy-wait) inside a pass, and stop when it ends: measured on ViT-B-32
    # at batch 1 with 50 ms idle between passes, no spinning took 39 ms a pass, ONNX
    # Runtime's default (spinning on after the pass too) 27 ms and 92 ms of CPU per
    # pass-and-gap, taken from the threads that decode photos and run the bot; this,
    # 27 ms and 53 ms of CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(
        str(model) if isinstance(model, Path) else model,
        options,
        providers=["CPUExecutionProvider"],
    )
