"""Saved ``.keras`` files: the archive and its config checked before Keras builds the model."""

from __future__ import annotations

import io
import json
import os
from typing import Any, Mapping

from ..gates import InteropError, open_framework_file
from ._config import KERAS_IDENTITY_LAYERS, SUPPORTED_MODELS, import_keras

#: Largest ``config.json`` / ``metadata.json`` member of a ``.keras`` file read (an LSTM model's is a few KB).
MAX_KERAS_CONFIG_BYTES = 1 << 20


#: The layer classes a model from_keras maps may hold (NotEqual and Any: how a saved functional model
#: stores Masking's mask, checked by :func:`_is_masking_mask`); any other is refused before Keras builds it.
_MODEL_LAYERS = frozenset({
    "InputLayer", "Masking", "Embedding", "LSTM", "Bidirectional", "Dense", "TimeDistributed", "Activation",
    "NotEqual", "Any", *KERAS_IDENTITY_LAYERS,
})
_INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer", "embeddings_initializer")
_ZEROS: dict[str, Any] = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def _input_sizes(node: Any) -> list[int]:
    """The last dimension of every input shape (``batch_shape``, ``input_shape``, ...) anywhere in a config."""
    found: list[int] = []
    stack = [node]
    while stack:  # iterative: json.loads has already bounded the depth
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, value in item.items():
                if key in ("batch_shape", "batch_input_shape", "input_shape", "shape") and isinstance(value, list) and value:
                    last = value[-1]
                    if isinstance(last, int) and not isinstance(last, bool):
                        found.append(last)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _precheck_config(raw: bytes, path: Any, stored_bytes: int) -> bytes:
    """Refuse a ``.keras`` config that from_keras cannot map, or that implies a huge model, before Keras builds it.

    Keras builds (and initialises, e.g. orthogonally) every variable the config
    declares before it reads a weight: ``units=8192`` in a 15 KB file costs a
    gigabyte and a minute.  So the layer classes must be those of
    :data:`_MODEL_LAYERS`, and the LSTM sizes pass
    :func:`~nplstm.params.check_model_size`, the limit nplstm's own
    constructors use; and they declare no more float32 parameters than the
    file's ``stored_bytes`` of weights could hold (twice, plus
    :data:`~nplstm.io.BUDGET_ALLOWANCE`).  Returns the config with every LSTM initialiser set to
    zeros (initialisers cannot change the loaded layer: its weights replace them).
    """
    from ...io import BUDGET_ALLOWANCE, WeightsFileError
    from ...params import check_model_size, positive_int
    from ...stack import stack_parameter_count

    try:
        config = json.loads(raw)
        layers = config["config"]["layers"]
        kinds = [layer["class_name"] for layer in layers]
    except (ValueError, RecursionError, KeyError, TypeError) as exc:
        raise WeightsFileError(f"{path}: config.json is not a Keras model config ({type(exc).__name__})") from None
    if config.get("class_name") not in ("Sequential", "Functional"):
        raise WeightsFileError(f"{path}: from_keras maps {SUPPORTED_MODELS}; the file holds a {config.get('class_name')!r}")
    for layer, kind in zip(layers, kinds):
        if kind not in _MODEL_LAYERS:
            name = layer.get("name") if isinstance(layer, Mapping) else None
            if name is None and isinstance(layer, Mapping) and isinstance(layer.get("config"), Mapping):
                name = layer["config"].get("name")  # a Sequential's layers name themselves in their config
            raise WeightsFileError(f"{path}: from_keras cannot map layer {name!r} ({kind}); it maps {SUPPORTED_MODELS}")
    if not {"LSTM", "Bidirectional"} & set(kinds):
        raise WeightsFileError(
            f"{path}: from_keras maps models with an LSTM or Bidirectional(LSTM) layer; the file holds a "
            f"{config.get('class_name')!r} of layers {kinds[:6]}"
        )
    sizes = [n for n in _input_sizes(config) if n > 0]
    widest = max(sizes, default=1)
    total = 0
    for layer in layers:
        if not isinstance(layer, Mapping):
            raise WeightsFileError(f"{path}: config.json is not a Keras model config (a layer is not an object)")
        kind, inner = layer["class_name"], layer.get("config")
        own = [n for n in _input_sizes({k: v for k, v in layer.items() if k != "config"}) if n > 0]
        input_size = max(own, default=widest)  # its build_config / inbound shapes, else the widest anywhere
        if kind == "TimeDistributed" and isinstance(inner, Mapping) and isinstance(inner.get("layer"), Mapping):
            kind, inner = inner["layer"].get("class_name"), inner["layer"].get("config")
        subs: list[Any] = [inner] if kind in ("LSTM", "Dense", "Embedding") else []
        if kind == "Bidirectional" and isinstance(inner, Mapping):
            subs = [sub.get("config") for sub in (inner.get("layer"), inner.get("backward_layer")) if isinstance(sub, Mapping)]
        for sub in subs:
            try:
                if kind == "Embedding":
                    rows, cols = positive_int(sub["input_dim"], "input_dim"), positive_int(sub["output_dim"], "output_dim")
                    count, what = rows * cols, f"the Keras Embedding({rows}, {cols}) the file declares"
                elif kind == "Dense":
                    units = positive_int(sub["units"], "units")
                    count, what = (input_size + 1) * units, f"the Keras Dense(units={units}) the file declares"
                else:
                    units = positive_int(sub["units"], "units")
                    count = stack_parameter_count(input_size, units, 1, bidirectional=False, proj_size=0, bias=True, peepholes=False)
                    what = f"the Keras LSTM(units={units}) the file declares"
                check_model_size(count, 1, 4, what)
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsFileError(f"{path}: {exc}") from None
            total += count
            for key in _INITIALIZERS:
                if key in sub:
                    sub[key] = dict(_ZEROS)
    # Keras allocates what the config declares before reading a weight: no more than the file stores
    if 4 * total > 2 * stored_bytes + BUDGET_ALLOWANCE:
        raise WeightsFileError(
            f"{path}: its config declares {total} Dense/Embedding/LSTM parameters but the file stores only {stored_bytes} bytes "
            "of weights; a .keras file holds the weights of every layer it declares"
        )
    return json.dumps(config).encode()


def load_keras_file(path: str | os.PathLike) -> Any:
    """The Keras model in a ``.keras`` file, checked before Keras reads a byte of it.

    The file must be a regular file (:func:`~nplstm.io.open_regular_file`: a
    FIFO or device is refused at once, also behind a symlink) and a zip whose
    directory passes :func:`~nplstm.io.check_zip_budget`: at most
    :data:`~nplstm.io.DEFAULT_MAX_TOTAL_BYTES` declared, no more than twice
    the file's size (Keras stores members uncompressed), and its JSON members
    at most :data:`MAX_KERAS_CONFIG_BYTES` each.  Its config must describe a
    model from_keras maps, within :data:`~nplstm.params.MAX_MODEL_BYTES`
    (:func:`_precheck_config`).  Keras then reads a copy of those checked
    bytes (never the path again), initialisers set to zeros, with
    ``safe_mode=True`` and ``compile=False``.  Every failure is an
    InteropError naming the file.
    """
    import zipfile

    from ...io import DEFAULT_MAX_TOTAL_BYTES, WeightsFileError, check_zip_budget

    import_keras()  # InteropError saying what to install, before the file is touched
    with open_framework_file(path) as fh:
        try:
            if not zipfile.is_zipfile(fh):
                raise WeightsFileError(f"{path} is not a Keras 3 .keras file (a zip archive); nplstm reads only those")
            check_zip_budget(fh, DEFAULT_MAX_TOTAL_BYTES, max_expansion=2)
            with zipfile.ZipFile(fh) as zf:  # its directory was just bounded by check_zip_budget
                for info in zf.infolist():
                    if info.filename.endswith(".json") and info.file_size > MAX_KERAS_CONFIG_BYTES:
                        raise WeightsFileError(
                            f"{path}: member {info.filename!r} declares {info.file_size} bytes, "
                            f"over the limit of {MAX_KERAS_CONFIG_BYTES} for a Keras config"
                        )
                if "config.json" not in zf.namelist():
                    raise WeightsFileError(f"{path}: no config.json; not a Keras 3 .keras file")
                stored = sum(i.file_size for i in zf.infolist() if not i.filename.endswith(".json"))
                config = _precheck_config(zf.read("config.json"), path, stored)
                # Keras reads a copy whose initialisers are zeros (they are inert: the weights are loaded
                # over them), since an orthogonal initialiser of a large layer costs minutes before any check
                archive = io.BytesIO()
                with zipfile.ZipFile(archive, "w") as out:
                    for info in zf.infolist():
                        out.writestr(info.filename, config if info.filename == "config.json" else zf.read(info))
            archive.seek(0)
        except WeightsFileError as exc:
            raise InteropError(str(exc)) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise InteropError(f"{path} is not a readable zip file: {exc}") from None
        from keras.src.saving import saving_lib  # the loader keras.saving.load_model calls, given the open file

        try:
            return saving_lib.load_model(archive, compile=False, safe_mode=True)
        except Exception as exc:  # keras raises assorted errors (and RecursionError) for unreadable files
            text = " ".join(str(exc).split())[:300]
            raise InteropError(f"{path}: cannot be loaded as a Keras model: {type(exc).__name__}: {text}") from None
