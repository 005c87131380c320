"""An independent reference LSTM written straight from the equations.

Deliberately naive: one sequence, column vectors, per-gate matrices, the
textbook sigmoid.  It shares no code with nplstm, so agreeing with it means
something.
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_lstm(x, weights, h0=None, c0=None):
    """x: (T, I); weights: dict Wf, Wi, Wc, Wo (H, H+I), bf.. (H, 1).

    Returns (hs (T, H), h_T (H,), c_T (H,)) in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    H = weights["Wf"].shape[0]
    h = np.zeros((H, 1)) if h0 is None else np.asarray(h0, dtype=np.float64).reshape(H, 1)
    c = np.zeros((H, 1)) if c0 is None else np.asarray(c0, dtype=np.float64).reshape(H, 1)
    hs = []
    for x_t in x:
        z = np.vstack([h, np.asarray(x_t, dtype=np.float64).reshape(-1, 1)])
        f = sigmoid(weights["Wf"] @ z + weights["bf"])
        i = sigmoid(weights["Wi"] @ z + weights["bi"])
        g = np.tanh(weights["Wc"] @ z + weights["bc"])
        o = sigmoid(weights["Wo"] @ z + weights["bo"])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h[:, 0])
    hs = np.array(hs).reshape(len(hs), H)
    return hs, h[:, 0], c[:, 0]


def random_weights(rng, input_size, hidden_size, scale=0.5):
    H, I = hidden_size, input_size
    w = {f"W{k}": rng.normal(scale=scale, size=(H, H + I)) for k in "fico"}
    w.update({f"b{k}": rng.normal(scale=scale, size=(H, 1)) for k in "fico"})
    return w


def load_into(lstm, weights):
    for name, value in weights.items():
        setattr(lstm, name, value)
    return lstm
