"""`nplstm predict` writes a model's predictions; CSV files with headers and chosen columns; `nplstm convert` on .npz."""

import numpy as np
import pytest

from nplstm import SequenceModel, StackedLSTM, WeightsFileError
from nplstm.cli import main
from nplstm.io import read_csv


def write(path, text):
    path.write_text(text)
    return path


# ------------------------------------------------------------------- CSV
def test_a_header_and_named_columns_read_a_real_looking_csv(tmp_path):
    path = write(tmp_path / "prices.csv", "date,price,volume,label\n2026-01-02,1.5,100,up\n2026-01-03,2.5,200,down\n")
    with pytest.raises(WeightsFileError, match=r"line 1 is not a list of numbers: 'date' is not a number \(a header\? skip it with skip_header"):
        read_csv(path)
    np.testing.assert_array_equal(read_csv(path, skip_header=True, columns=["price", "volume"]), [[1.5, 100], [2.5, 200]])
    np.testing.assert_array_equal(read_csv(path, skip_header=True, columns=["2", "1"]), [[100, 1.5], [200, 2.5]])
    with pytest.raises(WeightsFileError, match=r"line 2 is not a list of numbers: '2026-01-02'"):
        read_csv(path, skip_header=True)  # the date column is not a number: choose columns
    with pytest.raises(WeightsFileError, match=r"a chosen column is not a number: 'up'"):
        read_csv(path, skip_header=True, columns=["price", "label"])
    with pytest.raises(WeightsFileError, match=r"no column named 'Price'; the header has \['date', 'price', 'volume', 'label'\]"):
        read_csv(path, skip_header=True, columns=["Price"])
    with pytest.raises(WeightsFileError, match=r"column 4 does not exist: rows have 4 values \(columns 0 to 3\)"):
        read_csv(path, skip_header=True, columns=[4])
    with pytest.raises(WeightsFileError, match=r"name a column twice"):
        read_csv(path, skip_header=True, columns=[1, "price"])
    with pytest.raises(WeightsFileError, match="is a name, but the file has no header"):
        read_csv(write(tmp_path / "plain.csv", "1,2\n3,4\n"), columns=["price"])
    np.testing.assert_array_equal(read_csv(tmp_path / "plain.csv", columns=[1]), [[2], [4]])
    with pytest.raises(WeightsFileError, match="no data rows"):
        read_csv(write(tmp_path / "only.csv", "a,b\n"), skip_header=True)
    with pytest.raises(WeightsFileError, match=r"line 3 has 2 values; the rows before it have 4"):
        read_csv(write(tmp_path / "short.csv", "a,b,c,d\n1,2,3,4\n5,6\n"), skip_header=True, columns=[0])


# --------------------------------------------------------------- predict
@pytest.fixture
def models(tmp_path, rng):
    floats = SequenceModel(2, 3, 2, hidden_layers=[(4, "relu")], activation="softmax", seed=0)
    tokens = SequenceModel(3, 4, 1, num_embeddings=7, mask_zero=True, activation="sigmoid", seed=1)
    tagger = SequenceModel(2, 3, 2, output="sequence", bidirectional=True, seed=2)
    return {name: (m, m.save(tmp_path / f"{name}.npz")) for name, m in
            (("floats", floats), ("tokens", tokens), ("tagger", tagger))}


def test_predict_writes_the_models_predictions_for_one_sequence_and_a_batch(models, tmp_path, rng, capsys):
    model, path = models["floats"]
    x = rng.normal(size=(5, 2))
    write(tmp_path / "x.csv", "a,b,c\n" + "".join(f"{float(v0)!r},skip,{float(v1)!r}\n" for v0, v1 in x))
    out = tmp_path / "p.npy"
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "x.csv"), "--skip-header",
                 "--columns", "a,c", "--out", str(out)]) == 0
    assert "predictions (2,) written" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out), model.predict(x[None])[0])
    batch = rng.normal(size=(3, 5, 2))
    np.save(tmp_path / "batch.npy", batch)
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "batch.npy"), "--out", str(tmp_path / "p.csv")]) == 0
    np.testing.assert_allclose(np.loadtxt(tmp_path / "p.csv", delimiter=","), model.predict(batch), rtol=1e-15)

    tagger, tagger_path = models["tagger"]
    assert main(["predict", "--weights", str(tagger_path), "--input", str(tmp_path / "batch.npy"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), tagger.predict(batch))


def test_predict_reads_token_ids_from_a_column(models, tmp_path, capsys):
    model, path = models["tokens"]
    write(tmp_path / "ids.csv", "token\n3\n1\n6\n0\n0\n")
    out = tmp_path / "p.npy"
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "ids.csv"), "--skip-header", "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), model.predict(np.array([[3, 1, 6]]))[0], rtol=0, atol=1e-14)  # mask_zero: trailing 0s are padding
    np.save(tmp_path / "ids.npy", np.array([[3, 1, 6, 0], [2, 2, 2, 2]]))
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "ids.npy"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), model.predict(np.array([[3, 1, 6, 0], [2, 2, 2, 2]])))
    write(tmp_path / "bad.csv", "9\n1\n")
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "bad.csv"), "--out", str(out)]) == 1
    assert "token ids in [0, 7); got values from 1 to 9" in capsys.readouterr().err


def test_predict_refuses_a_model_without_an_output_layer(tmp_path, capsys):
    path = StackedLSTM(1, 2, seed=0).save(tmp_path / "s.npz")
    np.save(tmp_path / "x.npy", np.ones((3, 1)))
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")]) == 1
    assert "is a StackedLSTM: it has no output layer to predict with; `nplstm run` gives its hidden states" in capsys.readouterr().err
    assert main(["predict", "--weights", str(path), "--input", str(tmp_path / "x.npy"), "--skip-header",
                 "--out", str(tmp_path / "p.npy")]) == 1


def test_convert_rewrites_an_nplstm_file_and_refuses_torch_options_for_it(models, tmp_path, capsys):
    model, path = models["tokens"]
    out = tmp_path / "copy.npz"
    assert main(["convert", str(path), str(out)]) == 0
    assert "SequenceModel" in capsys.readouterr().out
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(SequenceModel.load(out).predict(ids), model.predict(ids))
    assert main(["convert", str(path), str(out), "--batch-first"]) == 1
    assert "are options of torch .pt files" in capsys.readouterr().err
    assert main(["convert", str(path), str(tmp_path / "x.onnx")]) == 2  # the output must be an nplstm file


def test_convert_a_whole_torch_state_dict_and_a_keras_file(tmp_path, rng, capsys):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    emb, lstm, fc1, fc2 = nn.Embedding(9, 4), nn.LSTM(4, 5, batch_first=True), nn.Linear(5, 6), nn.Linear(6, 2)
    torch.save(nn.ModuleDict({"emb": emb, "lstm": lstm, "fc1": fc1, "fc2": fc2}).state_dict(), tmp_path / "m.pt")
    out = tmp_path / "m.npz"
    args = ["convert", str(tmp_path / "m.pt"), str(out), "--lstm", "lstm", "--embedding", "emb", "--head", "fc1,tanh,fc2",
            "--output", "last"]
    assert main(args) == 0, capsys.readouterr().err
    ids = rng.integers(0, 9, size=(3, 7))
    with torch.no_grad():
        out_seq, _ = lstm(emb(torch.from_numpy(ids)))
        expected = fc2(torch.tanh(fc1(out_seq[:, -1]))).numpy()
    np.testing.assert_allclose(SequenceModel.load(out).predict(ids), expected, atol=1e-6)
    assert main(["convert", str(tmp_path / "m.pt"), str(out)]) == 1  # a whole model's state dict needs its parts named
    assert "lstm" in capsys.readouterr().err

    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Masking(0.0), keras.layers.LSTM(3),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "k.keras")
    assert main(["convert", str(tmp_path / "k.keras"), str(tmp_path / "k.npz")]) == 0, capsys.readouterr().err
    x = rng.normal(size=(2, 5, 2)).astype(np.float32)
    x[1, 3:] = 0.0
    np.testing.assert_allclose(SequenceModel.load(tmp_path / "k.npz").predict(x), model.predict(x, verbose=0), atol=1e-5)
