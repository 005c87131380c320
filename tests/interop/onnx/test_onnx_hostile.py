"""Hostile ONNX plumbing: tiny graphs that ask the checker for gigabytes, bounded in memory and time (issue 17 item 9).

Also: onnxruntime's own log stays quiet when verify fails (item 15).
"""

import time
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nplstm.interop import InteropError, from_onnx  # noqa: E402

#: The import's own bound is by design about 64 MiB: a graph that slices time at a large constant end is probed at
#: more steps than that end (to tell a cut from a no-op), with labelled float64 tensors of up to
#: MAX_CHECK_ELEMENTS (32 MiB) each, the input and the LSTM's output (Slice end 174581: 63.95 MiB measured, 64.1 MiB
#: on a process's first call). The bound here adds a margin to that design figure, not to what a run happened to use.
MAX_PEAK = 80 * 1024 * 1024
MAX_SECONDS = 5.0


def lstm_model(extra_nodes, extra_outputs, opset=17):
    """A one-layer LSTM on X (T, B, 2) plus ``extra_nodes`` feeding extra graph outputs."""
    rng = np.random.default_rng(0)
    H, I = 3, 2
    inits = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, size=(1, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, size=(1, 4 * H, H)).astype(np.float32), "R"),
    ]
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H, name="lstm"), *extra_nodes]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["Y", *extra_outputs]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_v"), name=name)


def measured(fn):
    """Peak traced memory (bytes), wall time (s) and the exception (or None) of ``fn()``."""
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    try:
        fn()
    except InteropError as exc:
        error = exc
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, elapsed, error


def test_expand_of_a_small_constant_to_a_square_is_refused_before_allocating():
    """518 bytes: Expand(ConstantOfShape([20000, 1]), [1, 20000]) as an extra output used 1.6 GiB and was accepted."""
    model = lstm_model(
        [
            const("s", np.array([20000, 1], dtype=np.int64)),
            helper.make_node("ConstantOfShape", ["s"], ["c"], name="col"),
            const("t", np.array([1, 20000], dtype=np.int64)),
            helper.make_node("Expand", ["c", "t"], ["big"], name="square"),
        ],
        ["big"],
    )
    assert len(model.SerializeToString()) < 1000
    peak, elapsed, error = measured(lambda: from_onnx(model, verify=False))
    assert error is not None and "node Expand 'square': builds a tensor of shape [20000, 20000]" in str(error)
    assert peak < MAX_PEAK and elapsed < MAX_SECONDS


def test_self_concats_of_a_constant_are_refused_before_allocating():
    """738 bytes: six self-concats of a constant used 2.1 GiB."""
    nodes = [const("s", np.array([1 << 20], dtype=np.int64)), helper.make_node("ConstantOfShape", ["s"], ["c0"], name="c0")]
    for k in range(6):
        nodes.append(helper.make_node("Concat", [f"c{k}"] * 4, [f"c{k + 1}"], axis=0, name=f"cat{k}"))
    model = lstm_model(nodes, ["c6"])
    assert len(model.SerializeToString()) < 1000
    peak, elapsed, error = measured(lambda: from_onnx(model, verify=False))
    assert error is not None and "node Concat 'cat" in str(error) and "over the" in str(error)
    assert peak < MAX_PEAK and elapsed < MAX_SECONDS


def test_broadcasting_shape_arithmetic_is_bounded():
    nodes = [
        const("a", np.zeros((1, 1 << 15), dtype=np.int64)),
        const("b", np.zeros((1 << 15, 1), dtype=np.int64)),
        helper.make_node("Add", ["a", "b"], ["ab"], name="outer"),
        helper.make_node("Cast", ["ab"], ["abf"], to=TensorProto.FLOAT, name="cast"),
    ]
    peak, elapsed, error = measured(lambda: from_onnx(lstm_model(nodes, ["abf"]), verify=False))
    assert error is not None and "node Add 'outer': builds a tensor of shape [32768, 32768]" in str(error)
    assert peak < MAX_PEAK and elapsed < MAX_SECONDS


# ---------------------------------------------------------------- fuzz

STEP = st.one_of(
    st.tuples(st.just("expand"), st.lists(st.sampled_from([1, 2, 7, 1000, 20000, 1 << 20]), min_size=1, max_size=3)),
    st.tuples(st.just("concat"), st.integers(2, 8)),
    st.tuples(st.just("zeros"), st.lists(st.sampled_from([1, 3, 1000, 1 << 16, 1 << 22]), min_size=1, max_size=3)),
    st.tuples(st.just("slice"), st.integers(-3, 1 << 20)),
    st.tuples(st.just("flatten"), st.just(0)),
    st.tuples(st.just("tile"), st.sampled_from([2, 100, 10000])),
)


def plumbing(steps):
    """A chain of plumbing nodes growing (or not) one value, from a small constant."""
    nodes = [const("v0", np.ones((2, 2), dtype=np.float32))]
    cur = "v0"
    for k, (op, arg) in enumerate(steps):
        out = f"v{k + 1}"
        if op == "expand":
            nodes += [const(f"e{k}", np.array(arg, dtype=np.int64)), helper.make_node("Expand", [cur, f"e{k}"], [out], name=f"expand{k}")]
        elif op == "concat":
            nodes.append(helper.make_node("Concat", [cur] * arg, [out], axis=0, name=f"concat{k}"))
        elif op == "zeros":
            nodes += [const(f"z{k}", np.array(arg, dtype=np.int64)), helper.make_node("ConstantOfShape", [f"z{k}"], [out], name=f"zeros{k}")]
        elif op == "slice":
            nodes += [
                const(f"s{k}", np.array([0], dtype=np.int64)),
                const(f"t{k}", np.array([arg], dtype=np.int64)),
                helper.make_node("Slice", [cur, f"s{k}", f"t{k}", f"s{k}"], [out], name=f"slice{k}"),
            ]
        elif op == "flatten":
            nodes += [const(f"r{k}", np.array([-1], dtype=np.int64)), helper.make_node("Reshape", [cur, f"r{k}"], [out], name=f"flat{k}")]
        else:  # tile-like: (n, ...) -> (arg, n, ...) by Expand to Concat([arg], Shape(cur))
            nodes += [
                const(f"u{k}", np.array([0], dtype=np.int64)),
                helper.make_node("Unsqueeze", [cur, f"u{k}"], [f"w{k}"], name=f"unsq{k}"),
                helper.make_node("Shape", [cur], [f"ws{k}"], name=f"shape{k}"),
                const(f"m{k}", np.array([arg], dtype=np.int64)),
                helper.make_node("Concat", [f"m{k}", f"ws{k}"], [f"tgt{k}"], axis=0, name=f"target{k}"),
                helper.make_node("Expand", [f"w{k}", f"tgt{k}"], [out], name=f"tile{k}"),
            ]
        cur = out
    return nodes, cur


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=6))
def test_fuzzed_plumbing_is_bounded_in_memory_and_time(steps):
    nodes, out = plumbing(steps)
    model = lstm_model(nodes, [out])
    peak, elapsed, _ = measured(lambda: from_onnx(model, verify=False))
    assert peak < MAX_PEAK, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < MAX_SECONDS, f"{elapsed:.1f} s"


# ---------------------------------------------------------------- item 15: one line from verify


def test_verify_failure_prints_no_onnxruntime_log(capfd):
    """onnxruntime used to print its coloured log line on stderr before nplstm's InteropError.

    The graph declares X's batch 3 and state inputs of batch 5: onnxruntime's
    LSTM kernel fails at run time (and logs it) when verify feeds the
    declared sizes.
    """
    rng = np.random.default_rng(0)
    H, I = 3, 2
    inits = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, size=(1, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, size=(1, 4 * H, H)).astype(np.float32), "R"),
    ]
    node = helper.make_node("LSTM", ["X", "W", "R", "", "", "h0", "c0"], ["Y"], hidden_size=H, name="lstm")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in (("X", ["T", 3, I]), ("h0", [1, 5, H]), ("c0", [1, 5, H]))]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(InteropError, match=r"^ONNX model 'g': verify: onnxruntime cannot run this graph \(.*initial_h must have shape.*\); pass verify=False to skip$"):
        from_onnx(model, verify=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
