"""Benchmark of the reconstruction engine; prints JSON (recorded in docs/benchmarks.md).

CPU: 512 x 512 x 360. GPU (when CuPy sees one): 1024 x 1024 x 750 and 2048 x 2048 x 1500.
Usage: ``python benchmarks/bench_recon.py [--cpu-only | --gpu-only]``.
"""

from __future__ import annotations

import sys

from tomostream.recon import bench
from tomostream.recon.backend import select_backend


def main(argv: list[str]) -> int:
    if "--gpu-only" not in argv:
        bench.main(["--backend", "numpy", "--size", "512", "512", "360", "--batch", "8", "--seconds", "3"])
    if "--cpu-only" not in argv and select_backend("auto").name == "cupy":
        bench.main(["--backend", "cupy", "--size", "1024", "1024", "750", "--size", "2048", "2048", "1500",
                    "--batch", "32", "--seconds", "4"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
