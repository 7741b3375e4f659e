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
  search) and then its garment picker (the other garments' searches, one model batch);
- every garment: `Engine.search_garments(photo)` (the finder, every garment in one job).
Reported: each process's peak resident set (VmHWM) once the engine is open and after the
searches, and each mode's peak against plain, for each variant: garment crops per model
pass (`garments.crops_per_pass`; 16 is all of a look's crops at once, as before the
setting) and the allocator (glibc's knobs; jemalloc and tcmalloc preloaded where
installed: `apt-get install libjemalloc2 libtcmalloc-minimal4`; rows are left out
without them).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STREET = ROOT.parent / "shared" / "datasets" / "street-ccp"
MODES = ("plain", "finder only", "chat", "every garment")
LIBRARIES = Path("/usr/lib/x86_64-linux-gnu")


@dataclass(frozen=True)
class Variant:
    name: str
    crops_per_pass: int
    environ: dict[str, str] = field(default_factory=dict)
    preload: Path | None = None  # an allocator library, LD_PRELOADed when installed


JEMALLOC = LIBRARIES / "libjemalloc.so.2"
TCMALLOC = LIBRARIES / "libtcmalloc_minimal.so.4"
# glibc keeps freed memory for reuse (per thread arena; the mmap threshold grows to the
# largest block freed): told to use fewer arenas, to give memory back, or to mmap every
# block of 1 MiB and more, the peaks measure lower, at a cost in time (docs/garments.md).
VARIANTS = (
    Variant("passes of 16 (before the setting), glibc", 16),
    Variant("passes of 3, glibc", 3),
    Variant("passes of 2 (default), glibc", 2),
    Variant("passes of 2, MALLOC_ARENA_MAX=2", 2, {"MALLOC_ARENA_MAX": "2"}),
    Variant("passes of 16, MALLOC_TRIM_THRESHOLD_=0", 16, {"MALLOC_TRIM_THRESHOLD_": "0"}),
    Variant("passes of 2, MALLOC_MMAP_THRESHOLD_=1MiB", 2, {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
    Variant("passes of 16, jemalloc", 16, preload=JEMALLOC),
    Variant("passes of 2, jemalloc", 2, preload=JEMALLOC),
    Variant("passes of 2, tcmalloc", 2, preload=TCMALLOC),
)


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


async def run_mode(
    mode: str, index: Path, cache: Path, photos: list[Path], crops_per_pass: int
) -> dict[str, Any]:
    from bench.look_latency import lite0_settings, unlimited_flow
    from bot.flow import Inputs, Results, SearchRequest
    from engine.embedder import load_embedder, model_identity
    from engine.index import open_index
    from engine.search import Engine

    settings = lite0_settings(cache, index, crops_per_pass)
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


def child(mode: str, index: Path, cache: Path, photos: list[Path], crops_per_pass: int) -> None:
    import torch

    torch.set_num_threads(1)
    print(json.dumps(asyncio.run(run_mode(mode, index, cache, photos, crops_per_pass))))


def variant_environ(variant: Variant) -> dict[str, str] | None:
    """The child's environment, or None when the variant's allocator is not installed."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **variant.environ}
    if variant.preload is not None:
        if not variant.preload.exists():
            return None
        environ["LD_PRELOAD"] = str(variant.preload)
    return environ


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
        for variant in VARIANTS:
            environ = variant_environ(variant)
            if environ is None:
                print(f"{variant.name}: {variant.preload} not installed, left out", file=sys.stderr)
                continue
            plain = None
            for mode in MODES:
                command = [sys.executable, "-m", "bench.finder_memory", "--mode", mode]
                command += ["--index", str(index), "--cache", str(cache)]
                command += ["--photos", str(photo_count)]
                command += ["--crops-per-pass", str(variant.crops_per_pass)]
                done = subprocess.run(
                    command, check=True, cwd=ROOT, capture_output=True, text=True, env=environ
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                plain = plain or row["peak_mib"]
                rows.append(
                    {
                        **row,
                        "variant": variant.name,
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
        "| crops per pass, allocator | mode | engine open | after the searches | against plain |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['mode']} | {row['opened_mib']:.0f} MiB "
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
    parser.add_argument("--crops-per-pass", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build_demo_index(args.build, args.cache)
    elif args.mode:
        photos = validation_photos(args.photos)
        child(args.mode, args.index, args.cache, photos, args.crops_per_pass)
    else:
        print("\n".join(report(measure(args.photos, args.index))))


if __name__ == "__main__":
    main()
