"""Benchmark: simulator start-up and stop times and CPU per tick (devices/simulators/bench.py).

Usage: .venv/bin/python benchmarks/simulators.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.simulators.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
