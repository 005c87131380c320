"""ONNX: export to the standard ``LSTM`` operator and import LSTM graphs back.

The package's modules, one per step: ``_export`` (:func:`to_onnx`),
``_source`` (loading, external data), ``_plumbing`` (the NumPy interpreter
of the non-LSTM nodes), ``_specs`` (one LSTM node's weights and
attributes), ``_probe`` (labelled runs and the selections they record),
``_match`` (the wiring proof), ``_wrapper`` (:class:`OnnxLSTM` and the
built stack), ``_verify`` (:func:`verify_import`) and ``_import``
(:func:`from_onnx`), ``_model`` (whole models: embedding lookup, LSTM and dense head
imported as a :class:`~nplstm.SequenceModel`) and ``_export_model`` (a
SequenceModel exported whole).

Whole models: :func:`from_onnx` returns a SequenceModel when the LSTM's
output feeds a dense head (``Gemm``, ``MatMul`` + ``Add``, ``Relu``,
``Tanh``, ``Sigmoid``, ``Softmax``/``LogSoftmax`` over the last axis,
``Identity``, ``Dropout``), optionally after an embedding ``Gather``; the
wiring proof runs up to the head's input, which must be the last LSTM's
h_n, last step or whole sequence, and verify compares ``predict`` with
onnxruntime on the whole graph.  :func:`to_onnx` of a SequenceModel writes
the whole model with dynamic batch and time.

Export (:func:`to_onnx`) writes one ``LSTM`` node per layer (gate order i,
o, f, c; ``W`` (D, 4H, I), ``R`` (D, 4H, H), ``B`` (D, 8H) = input bias then
recurrent bias, ``P`` (D, 3H) = Pi, Po, Pf when the stack has peepholes),
the stack's activations, clip and input_forget as node attributes, and
between layers a Transpose (T, D, B, H) → (T, B, D, H) and a Reshape to
(T, B, D·H).  ``batch_first`` is a Transpose around the graph; lengths are
an optional ``sequence_lens`` graph input fed to every node.  The ONNX
operator has no projection, so stacks with ``proj_size`` cannot be exported.

Import (:func:`from_onnx`) reads the graph the way exporters really write
it.  Every node between the graph inputs, the LSTM nodes and the graph
outputs must be *plumbing*: an operator from :data:`PLUMBING` that only
moves values (Transpose, Reshape, Squeeze, Unsqueeze, Slice, Concat, …) or
computes shapes and constant zero states (Shape, Gather, Expand,
ConstantOfShape, …).  The plumbing is not trusted by pattern: it is run
(in NumPy) on *labelled* inputs, where every element of the graph input
and of every LSTM output carries a unique number, at two different
sequence/batch sizes.  An LSTM node's input must then hold exactly the
labels of the graph input (features last) or of the previous LSTM node's
output laid out as (T, B, D·H); states must be exactly the right rows of
one state graph input, or constants; lengths exactly the sequence_lens
graph input.  Anything else is refused with an :class:`InteropError` that
names the node and the reason, so a silently mis-wired import cannot
happen.  Then, when onnxruntime is importable (or ``verify=True``), the
original graph is run on random inputs and every graph output that the
returned object reproduces is compared (:func:`verify_import`).

Supported (import and export) — the ONNX ``LSTM`` operator in full:

=================== ======================================================
direction           forward, bidirectional; reverse (import: OnnxLSTM)
layout              0 and 1 (import); export writes 0 plus Transposes
sequence_lens       graph input → ``lengths=``; constant → OnnxLSTM
initial_h/initial_c graph input (L·D, B, H) → ``hx``; all-zero constant /
                    Expand / ConstantOfShape → none; other constants →
                    OnnxLSTM (both from one kind of source)
P (peepholes)       yes (all-zero P imports as no peepholes)
input_forget        yes
clip                yes (> 0)
activations         all eleven; alpha/beta consumed as onnxruntime does
                    (only by the activations that take them)
hidden_size         checked against R
B absent            bias-free stack (export omits B for ``bias=False``)
float16/32/64       weights cast to float64 before any arithmetic
=================== ======================================================

ONNX stores alpha, beta and clip as float32 attributes; :func:`to_onnx`
also writes the stack's CellOptions at full precision in the model's
metadata (``nplstm.cell_options``), which :func:`from_onnx` uses only when
it rounds to exactly the node's attributes, so round trips are exact.

Refused on import, with the node named: any non-plumbing operator; state
inputs that are not rows of one (L·D, B, H) graph input; initial_h without
initial_c (or the reverse); per-direction activations that differ; a
parametrised activation whose alpha/beta is left to a default on which the
ONNX spec and onnxruntime disagree (ThresholdedRelu, Affine, ScaledTanh)
or whose alpha/beta list length is ambiguous; layers of different
direction, hidden size or cell options; weights computed at run time;
external data files outside the model's folder, not regular files, or over
``max_external_bytes`` (or any, with ``allow_external_data=False``).

The wiring proof, precisely: every axis that can vary — symbolic ones,
and the sequence and batch axes of X even when declared static, unless the
plumbing pins them (torch's static export expands a batch-sized zero
constant) — is probed at two small sizes, then at a long odd sequence with
a small batch and a large batch with a short sequence, both beyond twice
the largest integer that can reach a Slice/Gather/Split index (INT32_MAX
and larger are "to the end" sentinels).  A Slice, Gather or Split on a
value carrying data must pass every index of an axis whose size follows
these probes, at every probe: ``x[:8]``, ``x[-1]``, ``x[::-1]`` or a
split of the sequence is refused naming the node (a last-step selection is
recognised as such).  Every array the plumbing builds is bounded
(:data:`MAX_PLUMBING_BYTES` plus four times what it is fed), growth
checked before allocating.
"""

from __future__ import annotations

from typing import Sequence

from ._constants import ACTIVATION_PARAMS, CELL_METADATA, DEFAULT_MAX_EXTERNAL_BYTES, ONNX_ORDER, OPSET, PLUMBING
from ._export import to_onnx
from ._import import from_onnx
from ._plumbing import MAX_CHECK_ELEMENTS, MAX_PLUMBING_BYTES
from ._verify import VERIFY_ATOL, VERIFY_MAX_ELEMENTS, VERIFY_RTOL, verify_import
from ._wrapper import OnnxLSTM

__all__: Sequence[str] = [
    "to_onnx",
    "from_onnx",
    "verify_import",
    "OnnxLSTM",
    "PLUMBING",
    "ACTIVATION_PARAMS",
    "ONNX_ORDER",
    "OPSET",
    "CELL_METADATA",
    "DEFAULT_MAX_EXTERNAL_BYTES",
    "MAX_CHECK_ELEMENTS",
    "MAX_PLUMBING_BYTES",
    "VERIFY_MAX_ELEMENTS",
    "VERIFY_ATOL",
    "VERIFY_RTOL",
]
