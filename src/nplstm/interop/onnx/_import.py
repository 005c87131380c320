"""Import: :func:`from_onnx`."""

from __future__ import annotations

from typing import Any

from ...stack import StackedLSTM
from ..gates import InteropError
from ._constants import CELL_METADATA, DEFAULT_MAX_EXTERNAL_BYTES
from ._match import _match
from ._model import build_model, match_model, model_elements, verify_model, whole_model_parts
from ._source import _load_model
from ._verify import VERIFY_MAX_ELEMENTS, _verify_elements, verify_import
from ._wrapper import OnnxLSTM, _build


def from_onnx(
    model_or_path: Any,
    *,
    dtype: Any = None,
    verify: bool | None = None,
    allow_external_data: bool = True,
    max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES,
) -> StackedLSTM | OnnxLSTM | Any:
    """Import the LSTM of an ONNX model, or the whole model (a path, bytes or ``onnx.ModelProto``).

    Parameters
    ----------
    model_or_path
        The model.  A file is read with ``onnx.load`` (never following
        external data unless allowed) and checked with ``onnx.checker``.
    dtype
        The returned model's dtype; default float64 if the weights are
        float64, else float32 (float16 weights are widened exactly).
    verify : bool, optional
        Run the original graph in onnxruntime on a random input (random
        lengths too when sequence_lens is a graph input) and compare every
        graph output the returned object reproduces; raise InteropError on a
        mismatch.  Symbolic axes run at the wiring proof's long probe (an
        odd length beyond every constant in the graph); static axes at the
        size the graph declares (onnxruntime accepts no other).  Default:
        True when onnxruntime is importable and that run is within
        :data:`VERIFY_MAX_ELEMENTS`; ``verify=True`` on a larger graph is an
        InteropError.  onnxruntime's own log is silenced: a failure is one
        InteropError line.

        Whether or not it runs, the import is proven by the labelled wiring
        proof (see the module docstring): every Slice, Gather or Split on a
        sequence or batch axis must pass everything through, at a long odd
        length and a large batch beyond every constant in the graph.
    allow_external_data : bool
        Read tensors kept in external files (torch's exporter writes
        ``model.onnx.data`` beside the model), as onnxruntime does: only a
        relative location without ``..`` that resolves, symlinks followed,
        to a regular file inside the model's folder; at most
        ``max_external_bytes`` in total, sizes checked before reading.
        Anything else is refused naming the location.  False refuses every
        external reference.

    Returns
    -------
    SequenceModel, StackedLSTM or OnnxLSTM
        A :class:`~nplstm.SequenceModel` when the graph is a whole model:
        an optional embedding lookup (``Gather`` of a constant table at the
        ids of the one graph input), the LSTM nodes and a dense head read
        from the last LSTM's h_n, last step or whole sequence (see
        :mod:`nplstm.interop.onnx._model`); its ``predict(x)`` computes the
        graph's one output from its one input (batch-first).  Verify then
        compares ``predict`` with onnxruntime on the whole graph.
        Otherwise:
        A StackedLSTM whenever the graph is one: its ``forward(x, hx,
        lengths=...)`` takes the graph input ``X`` (its batch_first matches
        the graph), the state graph inputs as (L·D, B, H) (transpose a
        graph's batch-major (B, L·D, H) state inputs) and the
        ``sequence_lens`` graph input, and returns ``(Y, (Y_h, Y_c))`` laid
        out as torch does.  An :class:`OnnxLSTM` wraps it when the graph also
        has a reverse-only direction, constant initial states or constant
        lengths.
    """
    model, label = _load_model(model_or_path, allow_external_data, max_external_bytes)
    try:
        whole = whole_model_parts(model)
        metadata = {p.key: p.value for p in model.metadata_props}.get(CELL_METADATA)
        if whole is not None:
            mplan = match_model(model, *whole)
            plan = mplan.plan
            imported: Any = build_model(mplan, dtype, label, metadata)
        else:
            plan = _match(model)
            imported = _build(plan, dtype, label, metadata)
    except InteropError as exc:
        raise InteropError(f"{label}: {exc}") from None
    except Exception as exc:  # a file that parses but whose fields are nonsense
        raise InteropError(f"{label}: malformed ONNX LSTM model: {type(exc).__name__}: {exc}") from None
    elements = model_elements(model, mplan)[0] if whole is not None else _verify_elements(model, plan)[0]
    if verify is None:  # by default: when onnxruntime is there and the graph's sizes are affordable
        import importlib.util

        verify = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")) and elements <= VERIFY_MAX_ELEMENTS
    if verify:
        try:
            import onnx  # noqa: F401  (verify rewrites the graph with onnx's writer)
            import onnxruntime  # noqa: F401
        except ImportError:
            raise InteropError("verify=True needs onnx and onnxruntime (pip install 'nplstm[onnx]'); "
                               "without them from_onnx imports with verify=False") from None
        try:
            if whole is not None:
                if elements > VERIFY_MAX_ELEMENTS:
                    raise InteropError(
                        f"verify: the graph runs on {elements} elements of input and outputs, over the "
                        f"{VERIFY_MAX_ELEMENTS}-element verify limit; pass verify=False to skip"
                    )
                verify_model(model, imported, mplan)
            else:
                verify_import(model, imported, plan=plan)
        except InteropError as exc:  # one line that names the file too
            raise InteropError(f"{label}: {exc}") from None
    return imported
