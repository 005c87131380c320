import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI (CI=true) replays the same examples every run, so a landing is never decided by which
# random inputs a fuzz test happened to draw; a developer's runs draw new ones and can find new bugs.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

# the independent reference and the shared checks (tests/_support) import by bare name from every test folder
sys.path.insert(0, str(Path(__file__).parent / "_support"))

from nplstm import kernels, loop  # noqa: E402

# "numpy" lets run_sequence choose how a step meets its inputs (stacked under h at small H, the
# tests' usual sizes); "numpy-projected" forces the projected-ahead form at every size.
BACKENDS = ["numpy", "numpy-projected"] + (["numba"] if kernels.available() else [])

if kernels.available():
    # "auto" moves to the engine once it is loaded: load it before any test, so which
    # path a test runs does not depend on how long the tests before it took
    kernels.load_engine()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module", params=BACKENDS)
def each_backend(request):
    """Run a whole test module once per step-loop path (NumPy's two input forms, and numba when installed).

    With numba installed, "auto" sends small problems (most tests) to the
    compiled kernel; this makes the NumPy path face the same tests.
    """
    before, widest_stacked = kernels.get_backend(), loop.STACKED_MAX_GATES
    kernels.set_backend("numpy" if request.param.startswith("numpy") else request.param)
    if request.param == "numpy-projected":
        loop.STACKED_MAX_GATES = 0
    yield request.param
    kernels.set_backend(before)
    loop.STACKED_MAX_GATES = widest_stacked
