"""Native libraries that must load in a given order, whatever a program imports first."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_the_engine_loads_with_the_index_imported_before_the_model() -> None:
    """usearch loaded before onnxruntime crashes the process (bench/quality.py did:
    engine.index, then engine.embedder); the engine package loads onnxruntime first."""
    done = subprocess.run(
        [sys.executable, "-c", "import engine.index, engine.embedder, engine.onnx_int8"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
