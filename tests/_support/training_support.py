"""Shared by the training tests: weight snapshots and a fake terminal."""

import numpy as np


def snapshot(model):
    return {k: v.copy() for k, v in model.parameters().items()}


def assert_weights_equal(model, weights):
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)


class FakeTerminal:
    """A stream that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass
