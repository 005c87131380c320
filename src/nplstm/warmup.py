"""Loading the compiled engine before it is needed: :func:`warmup`.

numba compiles (or loads from its on-disk cache) one specialisation per
combination of argument types, on the first call that needs it.  The
background loader of the "auto" backend (:func:`nplstm.kernels.use_kernel`)
therefore does not stop at importing numba: it runs the public API once,
on tiny inputs, in every configuration whose arguments reach the engine
with different types (float32/float64, inference and training, lengths,
projection, both directions, inputs folded into each step or projected
up front: :func:`nplstm.kernels.folds_inputs`), so that no later call of a
user waits.
"""

from __future__ import annotations

import numpy as np

from . import kernels

__all__ = ["warmup"]


def _exercise() -> None:
    """Run forward and forward_train + backward of small stacks in each configuration the engine sees."""
    from .stack import StackedLSTM

    for dtype in (np.float32, np.float64):
        # one row with wide inputs and weights over kernels.FOLD_ONE_ROW_MAX_BYTES projects its inputs first
        wide = kernels.FOLD_ONE_ROW_MAX_BYTES // (16 * np.dtype(dtype).itemsize) + 1
        for options in ({}, {"bidirectional": True}, {"proj_size": 2}):
            for batch, inputs in ((1, 3), (1, wide), (2, 3)):
                stack = StackedLSTM(inputs, 4, seed=0, dtype=dtype, **options)
                x = np.zeros((3, batch, inputs), dtype=dtype)
                for lengths in (None, np.array([3, 2][:batch])):
                    kernels.exercised(lambda: stack.forward(x, lengths=lengths))
                    kernels.exercised(lambda: stack.forward(x, lengths=lengths, return_sequences=False))
                    kernels.exercised(lambda: _train_step(stack, x, lengths))


def _train_step(stack: object, x: np.ndarray, lengths: object) -> None:
    out, (h_n, _), tape = stack.forward_train(x, lengths=lengths)  # type: ignore[attr-defined]
    stack.backward(tape, np.ones_like(out))  # type: ignore[attr-defined]
    stack.backward(tape, d_h_n=np.ones_like(h_n))  # type: ignore[attr-defined]  # many-to-one: a gradient for the final state only


kernels._exercise = _exercise


def warmup(*, wait: bool = True, timeout: float | None = None) -> bool:
    """Load the compiled engine now instead of when the "auto" policy decides to.

    With the default "auto" backend a process runs on the NumPy path until
    its calls have cost about as much as loading the engine, then loads it
    in the background; a server that wants compiled speed from its first
    request calls ``warmup()`` at start-up.

    Parameters
    ----------
    wait : bool
        Block until the engine is loaded (default); False starts loading in
        the background and returns at once.
    timeout : float, optional
        Seconds to wait at most (a cold numba cache compiles for a few minutes).

    Returns
    -------
    bool
        True when the compiled engine is ready; False when numba or scipy is
        not installed (``pip install 'nplstm[fast]'``), when it failed to
        compile (a warning says why), or while it is still loading.
    """
    return kernels.load_engine(wait=wait, timeout=timeout)
