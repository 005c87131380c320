"""Finite differences: the gradient checks every backward pass is held to."""

import numpy as np


def numeric_gradient(f, array, eps=1e-6):
    """Central differences of f() with respect to every entry of array (edited in place)."""
    grad = np.zeros(array.shape)
    for idx in np.ndindex(array.shape):
        old = array[idx]
        array[idx] = old + eps
        up = f()
        array[idx] = old - eps
        down = f()
        array[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def rel_error(a, b):
    return np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a)) + np.max(np.abs(b)))
