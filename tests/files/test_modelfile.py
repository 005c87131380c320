"""The one .npz schema: every model kind through one loader, old schemas, refusals before allocation."""

import json
import tracemalloc

import numpy as np
import pytest

from nplstm import LSTM, SequenceModel, StackedLSTM, WeightsFileError
from nplstm.io import read_npz
from nplstm.loading import load_model
from nplstm.modelfile import VERSION


def saved(tmp_path, **kwargs):
    model = SequenceModel(3, 4, 2, seed=0, **kwargs)
    model.lstm.layers[0][0].bf = np.arange(4.0)
    return model, model.save(tmp_path / "model.npz")


def rewrite(path, change):
    arrays = read_npz(path)
    change(arrays)
    np.savez(path, **arrays)


def set_config(**values):
    def change(arrays):
        config = json.loads(str(arrays["config"]))
        config.update(values)
        arrays["config"] = np.array(json.dumps(config))

    return change


def set_stack_config(**values):
    def change(arrays):
        config = json.loads(str(arrays["config"]))
        config["lstm"].update(values)
        arrays["config"] = np.array(json.dumps(config))

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("lstm.l0.Wc"), r"missing array 'lstm.l0.Wc' \(expected shape \(4, 7\)\)"),
        (lambda a: a.update({"head.W": np.zeros((2, 5))}), r"'head.W' has shape \(2, 5\); expected \(2, 4\)"),
        (lambda a: a.update({"lstm.l0.bo": np.full((4, 1), np.nan)}), r"'lstm.l0.bo' holds NaN or inf"),
        (lambda a: a.update({"lstm.l0.bi": np.zeros((4, 1), dtype=np.int64)}), r"'lstm.l0.bi' has dtype int64"),
        (lambda a: a.update({"extra": np.zeros(3)}), r"arrays \['extra'\] do not belong to a SequenceModel"),
        (lambda a: a.update({"format": np.array("something else")}), r"not an nplstm weights file"),
        (lambda a: a.update({"version": np.array(VERSION + 1)}), r"unsupported nplstm file version"),
        (lambda a: a.update({"kind": np.array("Transformer")}), r"unknown model kind 'Transformer'"),
        (lambda a: a.update({"dtype": np.array("float16")}), r"dtype 'float16'; expected float32 or float64"),
        (lambda a: a.update({"config": np.array("{not json")}), r"'config' is not JSON text"),
        (set_config(dense=[[-2, "linear"]]), r"malformed SequenceModel config"),
        (set_config(dense=[[2, "swish"]]), r"malformed SequenceModel config.*activation must be one of"),
        (set_config(output="first"), r"malformed SequenceModel config.*output must be one of"),
        (set_config(output_size=2), r"malformed SequenceModel config.*unknown config keys \['output_size'\]"),
        (set_stack_config(num_layers=True), r"malformed SequenceModel config"),
    ],
)
def test_ill_formed_files_are_refused(tmp_path, change, message):
    _, path = saved(tmp_path)
    rewrite(path, change)
    with pytest.raises(WeightsFileError, match=message):
        SequenceModel.load(path)


def test_a_config_implying_gigabytes_is_refused_before_any_allocation(tmp_path):
    _, path = saved(tmp_path)
    rewrite(path, set_stack_config(input_size=50_000_000))  # a 1-KB file claiming a 1.6 GB model, then 4000x4000
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match=r"implies \d+ (bytes of )?parameters, over the limit"):
            SequenceModel.load(path, max_bytes=1 << 28)
        rewrite(path, set_stack_config(input_size=3, hidden_size=4000))
        with pytest.raises(WeightsFileError, match="'lstm.l0.Wf' has shape"):
            SequenceModel.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTM(2, 3, seed=0, proj_size=2, batch_first=True),
        lambda: StackedLSTM(2, 3, num_layers=2, bidirectional=True, proj_size=1, seed=0, dtype=np.float32),
        lambda: StackedLSTM(2, 3, bias=False, seed=0),
        lambda: SequenceModel(2, 3, 4, num_layers=2, bidirectional=True, many_to_many=True, seed=0),
    ],
)
def test_every_kind_round_trips_through_the_one_loader(make, tmp_path, rng):
    model = make()
    for p in model.parameters().values():
        p[...] = rng.normal(size=p.shape)
    again = load_model(model.save(tmp_path / "m.npz"))
    assert type(again) is type(model) and again.dtype == model.dtype
    assert again.config() == model.config()
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value)
    arrays = read_npz(tmp_path / "m.npz")
    assert int(arrays["version"]) == VERSION and str(arrays["kind"]) == model.KIND
    with pytest.raises(WeightsFileError, match="not a"):
        (SequenceModel if not isinstance(model, SequenceModel) else StackedLSTM).load(tmp_path / "m.npz")


def test_version_one_files_still_load(tmp_path, rng):
    # Written exactly as nplstm 0.1 wrote them: SequenceModel with 'lstm.Wf' names and 4 config integers ...
    H, I, O = 3, 2, 1
    weights = {f"lstm.W{g}": rng.normal(size=(H, H + I)) for g in "fico"}
    weights.update({f"lstm.b{g}": rng.normal(size=(H, 1)) for g in "fico"})
    weights.update({"head.W": rng.normal(size=(O, H)), "head.b": rng.normal(size=O)})
    np.savez(tmp_path / "old_model.npz", format=np.array("nplstm.SequenceModel/1"),
             config=np.array([I, H, O, 0]), **weights)
    model = SequenceModel.load(tmp_path / "old_model.npz")
    x = rng.normal(size=(2, 5, I))
    lstm = LSTM(I, H)
    for name, value in weights.items():
        if name.startswith("lstm."):
            setattr(lstm, name[5:], value)
    _, h, _ = lstm.forward(x.transpose(1, 0, 2))
    np.testing.assert_allclose(model.predict(x), h @ weights["head.W"].T + weights["head.b"], atol=1e-12)
    # ... and StackedLSTM with torch-named tensors (gates i, f, g, o; two biases) and 7 config integers.
    torch_names = {"weight_ih_l0": rng.normal(size=(4 * H, I)), "weight_hh_l0": rng.normal(size=(4 * H, H)),
                   "bias_ih_l0": rng.normal(size=4 * H), "bias_hh_l0": rng.normal(size=4 * H)}
    np.savez(tmp_path / "old_stack.npz", format=np.array("nplstm.StackedLSTM/1"),
             config=np.array([I, H, 1, 0, 1, 0, 0]), **torch_names)
    stack = StackedLSTM.load(tmp_path / "old_stack.npz")
    rows = {g: slice(k * H, (k + 1) * H) for k, g in enumerate("ifgo")}
    w = stack.layers[0][0]
    np.testing.assert_array_equal(w.Wc, np.hstack([torch_names["weight_hh_l0"][rows["g"]], torch_names["weight_ih_l0"][rows["g"]]]))
    np.testing.assert_array_equal(w.bo[:, 0], torch_names["bias_ih_l0"][rows["o"]] + torch_names["bias_hh_l0"][rows["o"]])


def test_a_zip_bomb_parameter_is_refused_from_the_directory(tmp_path):
    """A valid small config whose parameter member inflates to 200 MB: over the config's budget, never inflated."""
    import zipfile

    _, path = saved(tmp_path)
    arrays = read_npz(path)
    header = io_header((4, 7))
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in arrays.items():
            if name != "lstm.l0.Wf":
                buf = __import__("io").BytesIO()
                np.save(buf, value)
                zf.writestr(f"{name}.npy", buf.getvalue())
        info = zipfile.ZipInfo("lstm.l0.Wf.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, header + b"\0" * (200 << 20))  # stored deflated: the file stays small
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match="over the budget"):
            SequenceModel.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes"


def io_header(shape):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("config, message", [([1, 20000, 20000, 0], "implies"), ([4000, 4000, 1, 0], r"has shape \(2, 3\); expected \(4000, 8000\)")])
def test_version_one_configs_claiming_huge_models_allocate_nothing(tmp_path, config, message):
    """An 884-byte version-1 file whose config claims gigabytes (issue 12): refused before building the model."""
    np.savez(tmp_path / "m.npz", format=np.array("nplstm.SequenceModel/1"), config=np.array(config),
             **{"lstm.Wf": np.zeros((2, 3))})
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match=message):
            load_model(tmp_path / "m.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes"


def test_a_config_with_millions_of_layers_is_refused_by_arithmetic(tmp_path):
    """A 5-KB file claiming 10**7 layers: refused from the config's parameter count, before listing any layer."""
    model = StackedLSTM(2, 3, seed=0)
    path = model.save(tmp_path / "s.npz")
    rewrite(path, set_config(num_layers=10**7))
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match=r"implies \d+ parameters, over the limit"):
            load_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_parameter_count_by_arithmetic_equals_the_listed_shapes():
    import math

    from nplstm.stack import stack_parameter_shapes

    for cfg in [dict(input_size=3, hidden_size=5, num_layers=3, bidirectional=True, proj_size=2, bias=True),
                dict(input_size=1, hidden_size=4, num_layers=2, bidirectional=False, proj_size=0, bias=False,
                     cell={**StackedLSTM(1, 4).cell.to_config(), "peepholes": True})]:
        shapes = stack_parameter_shapes(cfg)
        total = sum(math.prod(s) for s in shapes.values())
        stack_parameter_shapes(cfg, max_count=total)  # exactly at the limit: fine
        with pytest.raises(ValueError, match=f"implies {total} parameters"):
            stack_parameter_shapes(cfg, max_count=total - 1)
