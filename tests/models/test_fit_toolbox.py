"""fit's toolbox as torch and Keras users reach for it (issue 19): each refusal the issue lists, now a passing test.

Losses by name, object or function; sample and class weights; clipping by value; the defaults (Adam 1e-3, no
clipping); a log off a terminal; (N,) targets and (N, 1) labels; predict on ragged lists; evaluate with metrics.
"""

import numpy as np
import pytest
from training_support import FakeTerminal

from nplstm import SGD, Adam, SequenceModel, fit
from nplstm.losses import CrossEntropy, Huber
from nplstm.optim import Optimizer, clip_grad_norm
from nplstm.training import evaluate, truncated_bptt

from gradcheck import numeric_gradient, rel_error


def snapshot(model):
    return {k: v.copy() for k, v in model.parameters().items()}


def weights_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 5, 2))
    return X, X.sum(axis=(1, 2))[:, None] * 0.3


class Recording(Optimizer):
    """Keeps the gradients it is given and changes nothing."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)
        self.seen = []

    def step(self, grads):
        self.seen.append({k: grads[k].copy() for k in self.params})


def first_gradients(model, X, Y, **kwargs):
    opt = Recording(model.parameters())
    fit(model, X, Y, epochs=1, batch_size=len(X), optimizer=opt, shuffle=False, verbose=0, **kwargs)
    return opt.seen[0]


# ------------------------------------------------------------------ losses
def test_loss_mae_is_accepted_and_exact(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    assert evaluate(model, X, Y, loss="mae") == pytest.approx(np.mean(np.abs(model.predict(X) - Y)), rel=1e-12)
    grads = first_gradients(model, X, Y, loss="mae")
    f = lambda: np.mean(np.abs(model.predict(X) - Y))  # noqa: E731
    assert rel_error(grads["head.W"], numeric_gradient(f, model.head.W)) < 1e-6
    history = fit(model, X, Y, loss="mae", epochs=5, optimizer=Adam(model.parameters(), lr=1e-2), verbose=0)
    assert history.loss[-1] < history.loss[0]


def test_losses_by_object_and_by_function_take_the_same_path(data):
    X, Y = data

    def my_mse(p, y):
        return float(np.mean((p - y) ** 2)), 2 * (p - y) / p.size

    runs = {}
    for name, loss, lr in [("name", "mse", 0.1), ("function", my_mse, 0.1), ("huber", Huber(delta=100.0), 0.2)]:
        model = SequenceModel(2, 4, 1, seed=0)
        fit(model, X, Y, loss=loss, epochs=2, batch_size=8, seed=0, optimizer=SGD(model.parameters(), lr=lr), verbose=0)
        runs[name] = snapshot(model)
    for k in runs["name"]:  # a user mse is mse; a Huber loss with a large delta is mse / 2, so SGD at twice the rate
        np.testing.assert_allclose(runs["function"][k], runs["name"][k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(runs["huber"][k], runs["name"][k], rtol=1e-10, atol=1e-14)
    model = SequenceModel(2, 4, 1, seed=0)
    assert evaluate(model, X, Y, loss=Huber(100.0)) == pytest.approx(evaluate(model, X, Y) / 2, rel=1e-12)


def test_binary_cross_entropy_on_a_sigmoid_output_reads_its_logits(rng):
    X = rng.normal(size=(10, 4, 2))
    Y = (rng.uniform(size=10) > 0.5).astype(float)
    model = SequenceModel(2, 3, 1, activation="sigmoid", seed=0)
    p = model.predict(X)[:, 0]
    by_hand = -np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p))
    assert evaluate(model, X, Y, loss="binary_cross_entropy") == pytest.approx(by_hand, rel=1e-12)
    grads = first_gradients(model, X, Y, loss="binary_cross_entropy")
    f = lambda: evaluate(model, X, Y, loss="binary_cross_entropy")  # noqa: E731
    for name in ("head.W", "lstm.l0.Wf"):
        assert rel_error(grads[name], numeric_gradient(f, model.parameters()[name])) < 1e-6, name
    with pytest.raises(ValueError, match=r"binary_cross_entropy reads class scores: the output layer's activation must be "
                                         r"linear \(logits\) or sigmoid; got 'softmax'"):
        fit(SequenceModel(2, 3, 1, activation="softmax", seed=0), X, Y, loss="binary_cross_entropy", verbose=0)
    with pytest.raises(ValueError, match=r"^Y must hold targets in \[0, 1\] for binary_cross_entropy"):
        fit(model, X, Y + 1, loss="binary_cross_entropy", verbose=0)


# ------------------------------------------------------------- weights
def test_integer_sample_weights_equal_repeated_sequences(data):
    X, Y = data
    w = np.arange(len(X)) % 3  # 0, 1, 2: left out, once, twice
    repeated = np.repeat(np.arange(len(X)), w)
    model = SequenceModel(2, 4, 1, seed=0)
    assert evaluate(model, X, Y, sample_weight=w) == pytest.approx(evaluate(model, X[repeated], Y[repeated]), rel=1e-12)
    weighted = first_gradients(model, X, Y, sample_weight=w)
    plain = first_gradients(model, X[repeated], Y[repeated])
    for k in plain:
        np.testing.assert_allclose(weighted[k], plain[k], rtol=1e-11, atol=1e-15)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(N,\) = \(24,\), one weight per sequence; got \(3,\)"):
        fit(model, X, Y, sample_weight=[1, 2, 3], verbose=0)


def test_sample_weights_weight_each_valid_step_of_a_sequence(rng):
    model = SequenceModel(2, 3, 1, many_to_many=True, seed=0)
    seqs = [rng.normal(size=(n, 2)) for n in (4, 2, 3)]
    targets = [rng.normal(size=(n, 1)) for n in (4, 2, 3)]
    w = np.array([1.0, 3.0, 0.5])
    sq = [np.sum((model.predict(s[None])[0] - y) ** 2) for s, y in zip(seqs, targets)]  # each sequence alone
    by_hand = np.dot(w, sq) / np.dot(w, [4, 2, 3])
    assert evaluate(model, seqs, targets, sample_weight=w) == pytest.approx(by_hand, rel=1e-12)


def test_class_weight_is_torchs_weight(rng):
    torch = pytest.importorskip("torch")
    X = rng.normal(size=(12, 3, 2))
    labels = rng.integers(0, 3, size=12)
    model = SequenceModel(2, 3, 3, seed=0)
    logits = torch.tensor(model.logits(X))
    weight = np.array([1.0, 4.0, 0.5])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(labels), weight=torch.tensor(weight)).item()
    assert evaluate(model, X, labels, loss=CrossEntropy(weight=weight)) == pytest.approx(expected, rel=1e-12)
    by_dict = first_gradients(model, X, labels, loss="cross_entropy", class_weight={1: 4.0, 2: 0.5})
    by_array = first_gradients(model, X, labels, loss=CrossEntropy(weight=weight))
    assert all(np.array_equal(by_dict[k], by_array[k]) for k in by_dict)
    with pytest.raises(ValueError, match="class_weight weighs the classes of cross_entropy; the loss is 'mse'"):
        fit(model, X, np.zeros((12, 3)), class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class weights must be a \(3,\) array"):
        fit(model, X, labels, loss="cross_entropy", class_weight=[1.0, 2.0], verbose=0)


# --------------------------------------------------------------- clipping
def test_clip_value_clamps_each_element_before_the_norm(data):
    X, Y = data
    Y = Y * 100  # large gradients
    model = SequenceModel(2, 4, 1, seed=0)
    raw = first_gradients(model, X, Y)
    clipped = first_gradients(model, X, Y, clip_value=0.5)
    for k in raw:
        np.testing.assert_array_equal(clipped[k], np.clip(raw[k], -0.5, 0.5))
    both = first_gradients(model, X, Y, clip_value=0.5, clip_norm=1.0)
    expected = {k: np.clip(v, -0.5, 0.5) for k, v in raw.items()}
    clip_grad_norm(expected, 1.0)
    for k in raw:
        np.testing.assert_allclose(both[k], expected[k], rtol=1e-14)
    with pytest.raises(ValueError, match="clip_value must be a positive finite number or None; got -1"):
        fit(model, X, Y, clip_value=-1, verbose=0)


# --------------------------------------------------------------- defaults
def test_the_defaults_are_adam_1e_3_without_clipping(data):
    X, Y = data
    Y = Y * 100  # gradient norms well above 1: clipping at 1 would change the steps
    assert np.sqrt(sum(np.sum(g * g) for g in first_gradients(SequenceModel(2, 4, 1, seed=0), X, Y).values())) > 10
    runs = []
    for kwargs in ({}, {"explicit": True}, {"clip_norm": 1.0}):
        model = SequenceModel(2, 4, 1, seed=0)
        if kwargs.pop("explicit", False):
            kwargs["optimizer"] = Adam(model.parameters(), lr=1e-3)
        fit(model, X, Y, epochs=2, batch_size=8, seed=0, verbose=0, **kwargs)
        runs.append(snapshot(model))
    assert weights_equal(runs[0], runs[1]) and not weights_equal(runs[0], runs[2])
    model = SequenceModel(2, 4, 1, many_to_many=True, seed=0)
    before = snapshot(model)
    truncated_bptt(model, X, np.repeat(Y[:, None], 5, axis=1), window=2)
    default = snapshot(model)
    for k, v in model.parameters().items():
        v[...] = before[k]
    truncated_bptt(model, X, np.repeat(Y[:, None], 5, axis=1), window=2, optimizer=Adam(model.parameters(), lr=1e-3))
    assert weights_equal(default, snapshot(model))


# -------------------------------------------------------------------- log


def test_off_a_terminal_fit_prints_one_line_per_epoch(data, capsys):
    X, Y = data
    fit(SequenceModel(2, 4, 1, seed=0), X, Y, epochs=3, validation_split=0.25, metrics=["mae"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and err == ""
    assert lines[0].startswith("epoch 1/3 - loss: ") and " - mae: " in lines[0] and " - val_loss: " in lines[0]
    assert lines[2].startswith("epoch 3/3 - ") and lines[2].endswith("s")
    for quiet in ({"verbose": 0}, {"progress": False}):
        fit(SequenceModel(2, 4, 1, seed=0), X, Y, epochs=2, **quiet)
        assert capsys.readouterr() == ("", "")
    with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'; got 3"):
        fit(SequenceModel(2, 4, 1, seed=0), X, Y, verbose=3)
    with pytest.raises(ValueError, match="give verbose or progress"):
        fit(SequenceModel(2, 4, 1, seed=0), X, Y, verbose=2, progress=True)


def test_verbose_2_prints_lines_even_on_a_terminal(data, capsys, monkeypatch):
    X, Y = data
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    fit(SequenceModel(2, 4, 1, seed=0), X, Y, epochs=2, verbose=2)
    assert [line[:9] for line in capsys.readouterr().out.splitlines()] == ["epoch 1/2", "epoch 2/2"]


# ------------------------------------------------------------------ shapes
def test_targets_n_for_one_output(data, rng):
    X, Y = data
    a, b = SequenceModel(2, 4, 1, seed=0), SequenceModel(2, 4, 1, seed=0)
    fit(a, X, Y, epochs=2, seed=0, verbose=0)
    fit(b, X, Y[:, 0], epochs=2, seed=0, verbose=0)
    assert weights_equal(snapshot(a), snapshot(b))
    assert evaluate(b, X, Y[:, 0]) == evaluate(b, X, Y)
    seq = SequenceModel(2, 4, 1, many_to_many=True, seed=0)
    Ys = rng.normal(size=(24, 5))
    assert evaluate(seq, X, Ys) == evaluate(seq, X, Ys[..., None])
    with pytest.raises(ValueError, match=r"^Y must have shape \(N, O\) = \(24, 2\) for this many-to-one model and mse; got \(24,\)"):
        fit(SequenceModel(2, 4, 2, seed=0), X, Y[:, 0], verbose=0)


def test_labels_as_a_column(rng):
    X = rng.normal(size=(16, 3, 2))
    labels = rng.integers(0, 3, size=16)
    a, b = SequenceModel(2, 4, 3, seed=0), SequenceModel(2, 4, 3, seed=0)
    fit(a, X, labels, loss="cross_entropy", epochs=2, seed=0, verbose=0)
    fit(b, X, labels[:, None], loss="cross_entropy", epochs=2, seed=0, verbose=0)
    assert weights_equal(snapshot(a), snapshot(b))
    seq = SequenceModel(2, 4, 3, many_to_many=True, seed=0)
    steps = rng.integers(0, 3, size=(16, 3))
    assert evaluate(seq, X, steps, loss="cross_entropy") == evaluate(seq, X, steps[..., None], loss="cross_entropy")


def test_predict_takes_the_ragged_list_fit_takes(rng):
    seqs = [rng.normal(size=(n, 2)) for n in (4, 1, 3)]
    one = SequenceModel(2, 3, 2, seed=0)
    np.testing.assert_allclose(one.predict(seqs), np.concatenate([one.predict(s[None]) for s in seqs]), rtol=0, atol=1e-14)
    many = SequenceModel(2, 3, 2, many_to_many=True, seed=0)
    out = many.predict(seqs)
    assert [o.shape for o in out] == [(4, 2), (1, 2), (3, 2)]
    for o, s in zip(out, seqs):
        np.testing.assert_allclose(o, many.predict(s[None])[0], rtol=0, atol=1e-14)
    clf = SequenceModel(2, 3, 4, activation="softmax", seed=0)
    np.testing.assert_allclose(clf.logits(seqs), np.concatenate([clf.logits(s[None]) for s in seqs]), rtol=0, atol=1e-14)
    ids = SequenceModel(3, 4, 1, num_embeddings=7, seed=0)
    tokens = [np.array([1, 2, 3]), np.array([4])]
    np.testing.assert_allclose(ids.predict(tokens), np.concatenate([ids.predict(t[None]) for t in tokens]), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="give either a list of sequences or padded x with lengths, not both"):
        one.predict(seqs, lengths=[4, 1, 3])


def test_evaluate_returns_the_loss_or_a_dict_with_metrics(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    p = model.predict(X)
    assert isinstance(evaluate(model, X, Y), float)
    got = evaluate(model, X, Y, metrics=["mae", "rmse"])
    assert got == pytest.approx({"loss": np.mean((p - Y) ** 2), "mae": np.mean(np.abs(p - Y)),
                                 "rmse": np.sqrt(np.mean((p - Y) ** 2))}, rel=1e-12)


# ------------------------------------------------------------ one path
def test_truncated_bptt_takes_fits_losses_weights_and_clipping(rng):
    model = SequenceModel(2, 3, 2, many_to_many=True, seed=4)
    x, y = rng.normal(size=(3, 8, 2)), 50 * rng.normal(size=(3, 8, 2))
    opt = Recording(model.parameters())
    truncated_bptt(model, x, y, window=8, optimizer=opt, loss="mae", clip_value=0.01, sample_weight=[1.0, 0.0, 2.0])
    assert max(np.abs(g).max() for g in opt.seen[0].values()) <= 0.01
    reference = Recording(model.parameters())
    kept = np.array([0, 2, 2])  # weights 1, 0, 2 as repeated sequences
    truncated_bptt(model, x[kept], y[kept], window=8, optimizer=reference, loss="mae", clip_value=0.01)
    for k in reference.seen[0]:
        np.testing.assert_allclose(opt.seen[0][k], reference.seen[0][k], rtol=1e-11, atol=1e-15)


# ------------------------------------------------------- accumulation
def test_accumulated_batches_are_one_batch_k_times_as_large(rng):
    """Ragged many-to-many data: batches count different numbers of valid steps, so each must weigh by its share."""
    seqs = [rng.normal(size=(int(n), 2)) for n in rng.integers(1, 7, size=24)]
    targets = [rng.normal(size=(len(s), 1)) for s in seqs]
    w = rng.uniform(0.5, 2.0, size=24)
    runs = []
    for batch_size, accumulate in ((12, 1), (4, 3), (5, 3)):
        model = SequenceModel(2, 3, 1, many_to_many=True, seed=0)
        opt = Adam(model.parameters(), lr=1e-2)
        steps = []
        history = fit(model, seqs, targets, epochs=2, batch_size=batch_size, accumulate=accumulate, optimizer=opt, seed=3,
                      sample_weight=w, verbose=0, on_epoch_end=lambda e, h: steps.append(opt.t))
        runs.append((snapshot(model), history.loss, steps))
    (one, loss_one, steps_one), (acc, loss_acc, steps_acc), (uneven, _, steps_uneven) = runs
    assert steps_one == steps_acc == [2, 4] and steps_uneven == [2, 4]  # 5 batches of 5: groups of 3 and 2
    for k in one:
        np.testing.assert_allclose(acc[k], one[k], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(loss_acc, loss_one, rtol=1e-12)
    assert not weights_equal(uneven, one)  # batches of 5 make other groups: the test can tell
    with pytest.raises(ValueError, match="accumulate must be an integer >= 1"):
        fit(SequenceModel(2, 3, 1, seed=0), rng.normal(size=(4, 3, 2)), np.zeros(4), accumulate=0, verbose=0)
