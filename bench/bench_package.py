"""Time make_archive (zst, gz, none) against GNU tar on the same synthetic tree.

    python bench/bench_package.py                      # 2,000 small files + 8 MB of binary-ish data
    python bench/bench_package.py --files 20000 --blob-mb 64 --repeat 5

Prints one row per format: input MB/s and archive size for ferry and for the shell baseline
(`tar -czf`, `tar --zstd -cf`, `tar -cf`), and ferry/baseline ratios (time ratio < 1 is faster).
The best of --repeat runs counts. Nothing here is asserted; see docs for recorded figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.builder.package import make_archive  # noqa: E402

WORDS = "release build deploy host commit branch artifact ferry agent event stream hook".split()
BASELINES = {"zst": ["tar", "--zstd", "-cf"], "gz": ["tar", "-czf"], "none": ["tar", "-cf"]}


def build_tree(root: Path, *, files: int, blob_mb: int, seed: int) -> int:
    """Source-like text files spread over nested directories, plus binary-ish blobs; returns bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        directory = root / f"pkg{i % 40:02d}" / f"mod{i % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"def {rng.choice(WORDS)}_{n}(x):  # {' '.join(rng.choices(WORDS, k=6))}\n    return x + {n}\n"
            for n in range(rng.randint(5, 60))
        ]
        data = "".join(lines).encode()
        (directory / f"file{i}.py").write_bytes(data)
        total += len(data)
    assets = root / "assets"
    assets.mkdir()
    remaining = blob_mb << 20
    index = 0
    while remaining > 0:
        size = min(remaining, 2 << 20)
        # half random, half repetitive: like images next to uncompressed data files
        half = size // 2
        data = rng.randbytes(half) + bytes(rng.choice(range(16)) for _ in range(256)) * ((size - half) // 256)
        (assets / f"blob{index}.bin").write_bytes(data)
        total += len(data)
        remaining -= size
        index += 1
    return total


def best_of(repeat: int, action: Callable[[], Path]) -> tuple[float, int]:
    """(best seconds, size of the archive it produced)."""
    best = float("inf")
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        path = action()
        best = min(best, time.perf_counter() - started)
        size = path.stat().st_size
        path.unlink()
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000, help="small source-like files (default 2000)")
    parser.add_argument("--blob-mb", type=int, default=8, help="MB of binary-ish data (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary tree")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    try:
        tree = work / "tree"
        tree.mkdir()
        total = build_tree(tree, files=args.files, blob_mb=args.blob_mb, seed=args.seed)
        out = work / "out"
        out.mkdir()
        mb = total / 1e6
        print(f"tree: {args.files} files + {args.blob_mb} MB blobs = {mb:.1f} MB; best of {args.repeat}")
        print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}")
        print()
        header = (
            f"{'fmt':<5} {'ferry MB/s':>10} {'tar MB/s':>9} {'time x':>7} "
            f"{'ferry MB':>9} {'tar MB':>8} {'size x':>7}  baseline"
        )
        print(header)
        print("-" * len(header))
        for fmt, command in BASELINES.items():
            ours, our_size = best_of(
                args.repeat,
                lambda fmt=fmt: make_archive(tree, out, excludes=[], fmt=fmt).path,  # type: ignore[misc]
            )
            target = out / f"baseline.{fmt}"

            def shell(command: list[str] = command, target: Path = target) -> Path:
                subprocess.run([*command, str(target), "-C", str(tree), "."], check=True)
                return target

            theirs, their_size = best_of(args.repeat, shell)
            print(
                f"{fmt:<5} {mb / ours:>10.1f} {mb / theirs:>9.1f} {ours / theirs:>7.2f} "
                f"{our_size / 1e6:>9.2f} {their_size / 1e6:>8.2f} {our_size / their_size:>7.2f}  "
                f"{' '.join(command)}"
            )
        print()
        print(
            "time x = ferry seconds / tar seconds (below 1: ferry faster); size x = ferry bytes / tar bytes"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
