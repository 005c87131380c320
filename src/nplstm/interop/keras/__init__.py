"""Keras 3: ``keras.layers.LSTM``, ``Bidirectional(LSTM)`` and whole models around them.

Keras packs gates i, f, c, o and stores ``kernel`` (I, 4H),
``recurrent_kernel`` (H, 4H) and one ``bias`` (4H,).  Its layer options
``return_sequences``, ``return_state`` and ``go_backwards`` are reproduced
by :class:`KerasLSTM`, and so are:

* ``recurrent_activation`` (the i/f/o gates) and ``activation`` (candidate
  and output), mapped onto nplstm's cell activations by
  :data:`KERAS_ACTIVATIONS` (``hard_sigmoid`` is Keras 3's
  ``relu6(x + 3) / 6``, i.e. HardSigmoid with alpha 1/6, beta 0.5);
* ``unit_forget_bias``, which only initialises the forget bias to one: the
  weights already hold whatever bias training produced, so nothing maps;
* ``keras.layers.Masking`` in front of the LSTM (give :func:`from_keras`
  the model): each sequence's mask becomes its length.  The rule is
  **trailing padding only** -- a sequence whose masked steps are not all
  at its end raises ValueError at call time, because nplstm's lengths
  cannot skip steps in the middle.  Outputs at masked steps are what Keras
  gives: the last valid output (LSTM) or zeros (Bidirectional, or
  ``zero_output_for_mask=True``; then a padded sequence's "last output"
  with ``return_sequences=False`` is zero too, as Keras returns step T-1's).

Whole models (issue 18): a Sequential or single-chain functional model of
LSTM layers only (a stack of several: one StackedLSTM) stays a
:class:`KerasLSTM`; one with an ``Embedding`` (``mask_zero`` -> lengths) or
a head of ``Dense`` / ``TimeDistributed(Dense)`` / ``Activation`` layers
becomes a :class:`~nplstm.model.SequenceModel` (``from_parts``), Keras'
masking, ``go_backwards`` and repeated/zero outputs at padded steps mapped
onto its ``mask_value``, ``go_backwards`` and ``masked_outputs``.  Dropout,
SpatialDropout1D, GaussianNoise, GaussianDropout and ActivityRegularization
are the identity at inference.  ``Bidirectional(merge_mode='sum'/'ave')``
is folded into the Dense that reads it (exact: that Dense is linear in its
input); ``'mul'`` and ``None`` are refused.  :data:`SUPPORTED_MODELS` says
what maps; every other layer, order or combination that nplstm cannot
reproduce exactly is refused naming the layer.

Every other setting is refused by name rather than ignored: each LSTM config
key must be one ``_check_lstm_config`` knows cannot change the output
(initialisers, regularisers, constraints, training-only dropout, ``unroll``,
``use_cudnn``), one that is mapped, or ``stateful``/``time_major`` at False;
Dense and Embedding configs pass ``_check_dense_config`` and
``_check_embedding_config`` the same way.
So ``stateful=True`` (Keras carries states between calls; nplstm does not),
``float16``/``mixed_*`` dtype policies, Bidirectional directions that differ
in any setting, LSTM layers of different units in one stack, LoRA or
quantized layers, subclassed layers and functional models that are not one
input -> layers -> output chain all raise InteropError.

Keras needs a backend, and Keras 3 defaults to tensorflow, which
``nplstm[keras]`` does not install.  Importing this module sets
``KERAS_BACKEND=torch`` (else jax, else tensorflow, whichever is installed)
when the variable is unset and keras is not yet imported
(:func:`default_keras_backend`), so ``from_keras`` and a later ``import
keras`` work; :func:`import_keras` says what to install when none is.
"""


from __future__ import annotations

import os
from typing import Any, Mapping

from ..gates import InteropError
from ._config import (
    KERAS_ACTIVATIONS,
    KERAS_DENSE_INERT_KEYS,
    KERAS_DENSE_MAPPED_KEYS,
    KERAS_DTYPES,
    KERAS_EMBEDDING_INERT_KEYS,
    KERAS_EMBEDDING_MAPPED_KEYS,
    KERAS_FIXED_KEYS,
    KERAS_HEAD_FIXED_KEYS,
    KERAS_IDENTITY_LAYERS,
    KERAS_INERT_KEYS,
    KERAS_MAPPED_KEYS,
    KERAS_MERGE_MODES,
    KERAS_ORDER,
    SUPPORTED_MODELS,
    _check_lstm_config,
    _check_weights,
    cell_options_from_config,
    default_keras_backend,
    import_keras,
)
from ._file import MAX_KERAS_CONFIG_BYTES, load_keras_file
from ._layers import KerasLSTM, _build_stack, _float_dtype, _Recurrent, _recurrent
from ._model import _from_model

__all__ = [
    "from_keras", "load_keras_file", "KerasLSTM", "import_keras", "default_keras_backend", "cell_options_from_config",
    "KERAS_ORDER", "KERAS_ACTIVATIONS", "KERAS_DTYPES", "KERAS_INERT_KEYS", "KERAS_MAPPED_KEYS", "KERAS_FIXED_KEYS",
    "KERAS_IDENTITY_LAYERS", "KERAS_DENSE_INERT_KEYS", "KERAS_DENSE_MAPPED_KEYS", "KERAS_EMBEDDING_INERT_KEYS",
    "KERAS_EMBEDDING_MAPPED_KEYS", "KERAS_HEAD_FIXED_KEYS", "KERAS_MERGE_MODES", "SUPPORTED_MODELS", "MAX_KERAS_CONFIG_BYTES",
]


def from_keras(
    layer_or_weights: Any, *, config: Mapping[str, Any] | None = None, dtype: Any = None
) -> Any:
    """Import a Keras LSTM layer or a whole Keras model.

    Returns a :class:`KerasLSTM` for a Keras ``LSTM`` or
    ``Bidirectional(LSTM)`` layer, a weight list, or a model of LSTM layers
    only ([Input], [Masking], one or more LSTM or Bidirectional(LSTM) layers,
    identity layers such as Dropout): it returns what the Keras layer/model
    returns, states included with ``return_state``.  A model with an
    ``Embedding`` or a Dense head becomes a
    :class:`~nplstm.model.SequenceModel` (``SequenceModel.from_parts``) whose
    ``predict`` equals Keras' ``predict``; the layers it maps are listed in
    :data:`SUPPORTED_MODELS`.  Masking and ``Embedding(mask_zero=True)`` map
    to lengths (trailing padding only, else ValueError at call time).  A
    ``Bidirectional`` with ``merge_mode='sum'``/``'ave'`` is folded into the
    Dense that reads it (``W (f + b) = [W; W] [f; b]``).

    Also accepts a path to a saved ``.keras`` model (read by
    :func:`load_keras_file`: checked before Keras builds it, then
    ``safe_mode=True``), or the weight list ``[kernel, recurrent_kernel,
    bias]`` of an LSTM layer with an optional ``config``
    (``return_sequences``, ``return_state``, ``go_backwards``, ``use_bias``,
    ``activation``, ``recurrent_activation``).  The Keras layer must be built.
    Every layer, setting or wiring nplstm does not reproduce exactly is
    refused with an InteropError naming it (allow-lists:
    ``_check_lstm_config``, ``_check_dense_config``,
    ``_check_embedding_config``, :data:`KERAS_IDENTITY_LAYERS`); for a
    stateful layer import its weights with ``config=dict(layer.get_config(),
    stateful=False)`` and pass the states to ``model.stack.forward(x, (h0, c0))``.
    ``dtype`` defaults to float64 if any imported weight is, else float32.
    """
    if isinstance(layer_or_weights, (str, os.PathLike)):
        layer_or_weights = load_keras_file(layer_or_weights)
    if hasattr(layer_or_weights, "layers") and not hasattr(layer_or_weights, "forward_layer"):
        return _from_model(layer_or_weights, dtype)
    if isinstance(layer_or_weights, (list, tuple)):
        cfg = dict(config or {})
        _check_lstm_config(cfg, "config")
        weights = [_check_weights(layer_or_weights, cfg.get("use_bias", True), None, "weights")]
        rec = _Recurrent(None, cfg, False, "concat", weights, False)
    elif hasattr(layer_or_weights, "get_weights") and hasattr(layer_or_weights, "get_config"):
        rec = _recurrent(layer_or_weights)
        if rec.merge_mode != "concat":
            raise InteropError(
                f"Bidirectional merge_mode {rec.merge_mode!r} maps only in a model where a Dense reads the "
                "Bidirectional (folded into that Dense's weights); a lone layer maps with 'concat'"
            )
    else:
        raise TypeError(f"expected a Keras LSTM/Bidirectional layer or model, a path or a weight list; got {type(layer_or_weights).__name__}")
    stack = _build_stack([rec], _float_dtype([rec.weights[0]["kernel"]], dtype))
    return KerasLSTM(
        stack,
        return_sequences=bool(rec.cfg.get("return_sequences", False)),
        return_state=bool(rec.cfg.get("return_state", False)),
        go_backwards=bool(rec.cfg.get("go_backwards", False)),
        zero_output_for_mask=rec.zero_output,
    )


default_keras_backend()
