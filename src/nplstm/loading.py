"""Open any model file nplstm understands, by its suffix (formerly ``nplstm.weights``).

=========  ==========================================================
suffix     read as
=========  ==========================================================
``.npz``   an nplstm file: :class:`~nplstm.SequenceModel` or :class:`~nplstm.StackedLSTM`
``.pt``    a ``torch.nn.LSTM`` state dict (``torch.load(weights_only=True)``)
``.onnx``  an ONNX model: an LSTM or a whole model (``onnx.load`` + checker, or without onnx nplstm's reader)
=========  ==========================================================

:func:`convert` also reads ``.keras`` files and writes the nplstm ``.npz``.

Every failure is a :class:`~nplstm.io.WeightsFileError` with a one-line
message; nothing is unpickled.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .io import WeightsFileError, check_regular_file
from .layer import LSTM
from .model import SequenceModel
from .modelfile import load_model as load_npz_model
from .stack import StackedLSTM

if TYPE_CHECKING:
    from .interop.onnx import OnnxLSTM

__all__ = ["load_model", "convert", "describe", "run_model", "Model"]

#: What :func:`load_model` returns.
Model = Union[SequenceModel, StackedLSTM, LSTM, "OnnxLSTM"]


def load_model(path: str | os.PathLike) -> Model:
    """Load a :class:`SequenceModel` or :class:`StackedLSTM` from a weights file."""
    check_regular_file(path)  # a directory, device or FIFO is refused before any reader sees it
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return load_npz_model(path)
    if suffix in (".pt", ".pth"):
        _need("torch", path)
        from .interop.torch import load_torch

        return load_torch(path, batch_first=False)  # a stack: 3-D inputs are (T, B, I), as `nplstm run` documents
    if suffix == ".onnx":
        # no onnx needed: without it a bounded reader of nplstm's own parses the file
        from .interop.onnx import from_onnx

        return from_onnx(path)
    raise WeightsFileError(f"{path}: unknown weights format {suffix!r} (use .npz, .pt or .onnx)")


def convert(src: str | os.PathLike, dst: str | os.PathLike, **options: Any) -> tuple[Any, Path]:
    """Import the model in ``src`` (``.pt``, ``.onnx``, ``.keras`` or ``.npz``) and save it as nplstm ``.npz``.

    ``options`` go to the importer: for a ``.pt`` state dict its layout
    ``batch_first=`` (required: a state dict cannot say) and, for a whole
    model's state dict, the ``lstm=``, ``head=`` and ``embedding=`` prefixes
    (see :func:`nplstm.interop.from_torch`).  Returns ``(model, path written)``.
    A model the nplstm file cannot hold is refused, naming what it has.
    """
    check_regular_file(src)
    suffix = Path(src).suffix.lower()
    if options and suffix not in (".pt", ".pth"):
        raise WeightsFileError(f"{src}: {sorted(options)} are options of torch .pt files; a {suffix} file says its layout")
    model: Any
    if suffix in (".pt", ".pth"):
        _need("torch", src)
        from .interop.torch import load_torch

        model = load_torch(src, **options)
    elif suffix == ".keras":
        _need("keras", src)
        from .interop.keras import from_keras

        model = from_keras(src)
    else:
        model = load_model(src)
    if not isinstance(model, (SequenceModel, StackedLSTM, LSTM)):
        raise WeightsFileError(
            f"{src}: imported as a {type(model).__name__}, which an nplstm file cannot hold "
            f"({model!r}); only a SequenceModel, StackedLSTM or LSTM can be saved"
        )
    return model, model.save(dst)


def _need(module: str, path: Any) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise WeightsFileError(f"{path}: reading this format needs {module} (pip install it)")


def _onnx_wrapper(model: Any) -> OnnxLSTM | None:
    """``model`` if it is an :class:`~nplstm.interop.onnx.OnnxLSTM`, else None.

    Looked up without importing the ONNX module: a model can only be an
    OnnxLSTM once that module is loaded.
    """
    module = sys.modules.get("nplstm.interop.onnx._wrapper")
    return model if module is not None and isinstance(model, module.OnnxLSTM) else None


def _stack_of(model: Model) -> StackedLSTM | Any:
    """The recurrent engine of a model (an OnnxLSTM is its own: its ``forward`` is what the graph computes)."""
    if isinstance(model, SequenceModel):
        return model.lstm
    if isinstance(model, LSTM):
        return model.engine
    return model


def _onnx_extras(model: OnnxLSTM) -> dict[str, Any]:
    """What an OnnxLSTM adds to its stack, JSON-able: only the features the graph has."""
    extras: dict[str, Any] = {}
    if model.reverse:
        extras["reverse"] = True
    if model.initial_states is not None:
        extras["initial_states"] = list(np.shape(model.initial_states[0]))
    if model.lengths is not None:
        extras["lengths"] = [int(n) for n in np.asarray(model.lengths).ravel()]
    return extras


def describe(model: Model) -> dict[str, Any]:
    """Kind, sizes, dtype, parameter count and shapes of a loaded model.

    Every model :func:`load_model` returns has ``input_size`` and
    ``hidden_size`` here; an OnnxLSTM also lists ``reverse``,
    ``initial_states`` (their shape) and ``lengths`` when its graph has them.
    """
    params = model.parameters()
    info: dict[str, Any] = {
        "kind": type(model).__name__,
        "dtype": str(next(iter(params.values())).dtype),
        "parameters": int(sum(p.size for p in params.values())),
        "shapes": {name: tuple(p.shape) for name, p in params.items()},
    }
    wrapper = _onnx_wrapper(model)
    engine = wrapper.stack if wrapper is not None else _stack_of(model)
    config = engine.config() if wrapper is not None else model.config()  # type: ignore[union-attr]
    if isinstance(model, SequenceModel):  # the stack's sizes first, then what the model adds around it
        config = {**config.pop("lstm"), "output_size": model.output_size, **config}
    info.update({k: v for k, v in config.items() if k != "cell"})
    if wrapper is not None:
        info.update(_onnx_extras(wrapper))
    cell = getattr(engine, "cell", None)
    if cell is not None and not cell.is_default:
        info["cell"] = repr(cell)
    return info


def run_model(model: Model, x: np.ndarray) -> dict[str, Any]:
    """Run one sequence ``x`` (T, I) or a batch through a loaded model.

    Returns ``outputs`` and the final ``h`` and ``c`` (and ``prediction`` for
    a SequenceModel), in the model's own shapes.
    """
    if x.ndim == 1:  # (T,): one feature per step, as the layer API takes it
        x = x[:, None]
    if isinstance(model, SequenceModel):
        batch = x if x.ndim == 3 else x[None]
        prediction, outputs, (h, c) = model.run(batch, return_sequences=True)
        assert outputs is not None
        squeeze = x.ndim != 3
        return {
            "outputs": outputs[0] if squeeze else outputs,
            "h": h[:, 0] if squeeze else h,
            "c": c[:, 0] if squeeze else c,
            "prediction": prediction[0] if squeeze else prediction,
        }
    outputs, (h, c) = _stack_of(model).forward(x)
    return {"outputs": outputs, "h": h, "c": c}
