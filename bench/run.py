"""Run the benchmark from anywhere: ``python bench/run.py [--quick]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.suite import main  # noqa: E402

raise SystemExit(main())
