"""The onnx wheel's own LSTM operator test cases, shared by test_onnx_backend_cases and test_protobuf."""

from __future__ import annotations

from typing import Any


def onnx_lstm_cases() -> dict[str, tuple[Any, list, list]]:
    """``{name: (node, inputs, expected outputs)}``: each ``export_*`` of the wheel's ``lstm.py`` with its
    ``expect`` replaced by a collector; empty without onnx."""
    try:
        from onnx.backend.test.case.node import lstm
    except ImportError:  # pragma: no cover
        return {}
    cases = {}

    def expect(node, inputs, outputs, name, **kwargs):
        cases[name] = (node, inputs, outputs)

    original = lstm.expect
    lstm.expect = expect
    try:
        for attr in dir(lstm.LSTM):
            if attr.startswith("export"):
                getattr(lstm.LSTM, attr)()
    finally:
        lstm.expect = original
    return cases
