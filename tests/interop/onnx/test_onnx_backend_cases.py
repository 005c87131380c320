"""The ONNX project's own LSTM operator test cases, run through from_onnx.

The onnx wheel ships them as ``onnx/backend/test/case/node/lstm.py``: each
``export_*`` builds a node, its inputs and the expected outputs (computed
by the ONNX project's NumPy reference) and hands them to ``expect``.  Here
``expect`` is replaced by a collector; each case becomes a graph whose X is
the graph input and whose other inputs are initializers (or, for
sequence_lens and the states, graph inputs in a second variant), imported
and compared with the expected outputs.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx.backend.test.case.node.lstm")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_cases import onnx_lstm_cases  # noqa: E402

from nplstm.interop import from_onnx  # noqa: E402

CASES = onnx_lstm_cases()
GRAPH_INPUT_SLOTS = {4, 5, 6}  # sequence_lens, initial_h, initial_c


def case_model(node, inputs, outputs, as_graph_inputs):
    present = [n for n in node.input if n]
    graph_inputs, inits, feeds = [], [], {}
    values = dict(zip(present, inputs))
    for slot, name in enumerate(node.input):
        if not name:
            continue
        value = values[name]
        if slot == 0 or (as_graph_inputs and slot in GRAPH_INPUT_SLOTS):
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
            feeds[name] = value
        else:
            inits.append(numpy_helper.from_array(value, name))
    out_names = [n for n in node.output if n]
    graph_outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in out_names]
    graph = helper.make_graph([node], "case", graph_inputs, graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feeds, dict(zip(out_names, outputs))


def node_outputs(node, imported, feeds):
    """What the node's Y / Y_h / Y_c are, from the imported model's forward."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = attrs.get("layout", 0)
    names = list(node.input) + [""] * (8 - len(node.input))
    x = feeds[names[0]]
    hx = (feeds[names[5]], feeds[names[6]]) if names[5] in feeds else None
    if hx is not None and layout == 1:
        hx = tuple(h.transpose(1, 0, 2) for h in hx)
    kwargs = {"lengths": feeds[names[4]]} if names[4] in feeds else {}
    out, (h, c) = imported.forward(x, hx, **kwargs)
    stack = getattr(imported, "stack", imported)
    D, H = stack.num_directions, stack.hidden_size
    seq = out.transpose(1, 0, 2) if stack.batch_first else out  # (T, B, D·H)
    T, B = seq.shape[:2]
    Y = seq.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    if layout == 1:
        Y, h, c = Y.transpose(2, 0, 1, 3), h.transpose(1, 0, 2), c.transpose(1, 0, 2)
    by_slot = {0: Y, 1: h, 2: c}
    return {name: by_slot[k] for k, name in enumerate(node.output) if name}


@pytest.mark.parametrize("as_graph_inputs", [False, True], ids=["initializers", "graph-inputs"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_backend_case(name, as_graph_inputs):
    node, inputs, outputs = CASES[name]
    model, feeds, expected = case_model(node, inputs, outputs, as_graph_inputs)
    imported = from_onnx(model)
    got = node_outputs(node, imported, feeds)
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")


def test_the_cases_cover_the_operator():
    assert {"test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise"} <= set(CASES)


def generated_data_dirs():
    import pathlib

    root = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    return sorted(root.glob("test_lstm_*")) if root.is_dir() else []


def run_data_dir(case_dir):
    """Import a backend test directory (model.onnx + test_data_set_0/*.pb) and compare with its outputs."""
    node = onnx.load(str(case_dir / "model.onnx")).graph.node[0]
    data = case_dir / "test_data_set_0"

    def tensors(kind):
        return [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob(f"{kind}_*.pb"))]

    model, feeds, expected = case_model(node, tensors("input"), tensors("output"), as_graph_inputs=True)
    got = node_outputs(node, from_onnx(model), feeds)
    for key, want in expected.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-6, err_msg=f"{case_dir.name}: {key}")


@pytest.mark.skipif(not generated_data_dirs(), reason="this onnx wheel ships no generated backend test data")
@pytest.mark.parametrize("case_dir", generated_data_dirs(), ids=lambda p: p.name)
def test_onnx_backend_generated_data(case_dir):
    run_data_dir(case_dir)


def test_data_dir_reader_on_cases_written_in_that_format(tmp_path):
    """The reader above, on the cases written the way onnx's generator lays them out."""
    for name, (node, inputs, outputs) in CASES.items():
        case_dir = tmp_path / name
        (case_dir / "test_data_set_0").mkdir(parents=True)
        model, _, _ = case_model(node, inputs, outputs, as_graph_inputs=True)
        onnx.save(model, str(case_dir / "model.onnx"))
        for kind, arrays in (("input", inputs), ("output", outputs)):
            for k, a in enumerate(arrays):
                onnx.save_tensor(numpy_helper.from_array(a), str(case_dir / "test_data_set_0" / f"{kind}_{k}.pb"))
        run_data_dir(case_dir)
