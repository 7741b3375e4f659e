"""Memory of searches with the garment finder against searches without it (issue 20: a
search with the finder within 1.2x of one without).

    HF_HUB_OFFLINE=1 python -m bench.finder_memory [--photos 12] [--index DIR]

Each mode runs in a fresh process (peak resident memory cannot be reset within one), with
the same imagenet-lite0 engine over the same index (the demo catalog unless --index names
a built one), one torch thread, over the same street photos (street-ccp's validation
split, ../shared), each photo searched once:
- plain: `Engine.search(image=photo)`, the whole photo, no finder;
- finder only: `Engine.find_garments(photo)`, no search;
- chat: the chat flow's first answer (`SearchFlow.run`: the finder, the largest garment's
  search) and then its garment picker (the other garments' searches, one model call);
- every garment: `Engine.search_garments(photo)` (the finder, every garment in one call).
Reported: each process's peak resident set (VmHWM) once the engine is open and after the
searches, and each mode's peak against plain; with glibc's defaults and with
MALLOC_TRIM_THRESHOLD_=0 (freed memory given back to the system).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STREET = ROOT.parent / "shared" / "datasets" / "street-ccp"
MODES = ("plain", "finder only", "chat", "every garment")
# glibc keeps freed memory for reuse; told to give it back (no trim threshold, which also
# stops the mmap threshold from growing), the peaks measured lower.
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc defaults": {},
    "MALLOC_TRIM_THRESHOLD_=0": {"MALLOC_TRIM_THRESHOLD_": "0"},
}


def validation_photos(count: int) -> list[Path]:
    """The first `count` photos of the finder's validation split (bench/train_garments.py)."""
    photos = sorted((STREET / "photos").glob("*.jpg"))
    held_out = [p for p in photos if zlib.crc32(p.stem.encode()) % 5 == 0]
    return held_out[:count]


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_mode(mode: str, index: Path, cache: Path, photos: list[Path]) -> dict[str, Any]:
    from bench.look_latency import lite0_settings, unlimited_flow
    from bot.flow import Inputs, Results, SearchRequest
    from engine.embedder import load_embedder, model_identity
    from engine.index import open_index
    from engine.search import Engine

    settings = lite0_settings(cache, index)
    embedder = load_embedder(settings.model)
    engine = Engine(settings, embedder, open_index(index, model_identity(embedder)))
    flow = unlimited_flow(engine, settings)
    opened = peak_mib()
    try:
        for path in photos:
            data = path.read_bytes()
            if mode == "plain":
                await engine.search(image=data)
            elif mode == "finder only":
                await engine.find_garments(data)
            elif mode == "every garment":
                await engine.search_garments(data)
            else:

                async def read(data: bytes = data) -> Inputs:
                    return Inputs([data])

                results = await flow.run(SearchRequest(None, read), contextlib.nullcontext)
                if isinstance(results, Results) and results.look is not None:
                    await flow.garment_picker(results.look)
    finally:
        engine.close()
    return {"mode": mode, "opened_mib": opened, "peak_mib": peak_mib()}


def child(mode: str, index: Path, cache: Path, photos: list[Path]) -> None:
    import torch

    torch.set_num_threads(1)
    print(json.dumps(asyncio.run(run_mode(mode, index, cache, photos))))


def measure(photo_count: int, index: Path | None = None) -> list[dict[str, Any]]:
    photos = validation_photos(photo_count)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        cache = scratch / "cache"
        cache.mkdir()
        if index is None:
            index = scratch / "index"
            index.mkdir()
            build = [sys.executable, "-m", "bench.finder_memory", "--build", str(index)]
            subprocess.run([*build, "--cache", str(cache)], check=True, cwd=ROOT)
        rows = []
        for allocator, variables in ALLOCATORS.items():
            plain = None
            for mode in MODES:
                command = [sys.executable, "-m", "bench.finder_memory", "--mode", mode]
                command += ["--index", str(index), "--cache", str(cache)]
                command += ["--photos", str(photo_count)]
                environ = {**os.environ, "HF_HUB_OFFLINE": "1", **variables}
                done = subprocess.run(
                    command, check=True, cwd=ROOT, capture_output=True, text=True, env=environ
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                plain = plain or row["peak_mib"]
                rows.append(
                    {
                        **row,
                        "allocator": allocator,
                        "ratio": row["peak_mib"] / plain,
                        "photos": len(photos),
                    }
                )
    return rows


def build_demo_index(index: Path, cache: Path) -> None:
    from bench.look_latency import lite0_settings
    from engine.embedder import load_embedder
    from tests.fakes.demo import index_demo_catalog

    settings = lite0_settings(cache, index)
    index_demo_catalog(settings, index, load_embedder(settings.model))


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"Peak resident memory, a fresh process per mode, {rows[0]['photos']} street photos:",
        "",
        "| allocator | mode | engine open | after the searches | against plain |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['allocator']} | {row['mode']} | {row['opened_mib']:.0f} MiB "
            f"| {row['peak_mib']:.0f} MiB "
            f"| **{row['ratio']:.2f}x** |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--index", type=Path, help="an imagenet-lite0 index (default: demo)")
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child's mode
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # a child's index build
    args = parser.parse_args()
    if args.build:
        build_demo_index(args.build, args.cache)
    elif args.mode:
        child(args.mode, args.index, args.cache, validation_photos(args.photos))
    else:
        print("\n".join(report(measure(args.photos, args.index))))


if __name__ == "__main__":
    main()
