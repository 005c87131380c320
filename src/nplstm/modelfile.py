"""The one ``.npz`` schema for every nplstm model, and its one loader.

A file holds, besides the parameters (named exactly as the model's
``parameters()``):

==========  =========================================================
member      content
==========  =========================================================
``format``  the text ``"nplstm"``
``version`` the integer :data:`VERSION` (3; files of version 2 still load)
``kind``    ``"LSTM"``, ``"StackedLSTM"`` or ``"SequenceModel"``
``config``  JSON text: the constructor arguments (``model.config()``)
``dtype``   ``"float64"`` or ``"float32"``
==========  =========================================================

Loading reads the small schema members first, checks the config and the
parameter count it implies against ``max_bytes`` (default
:data:`DEFAULT_MAX_PARAMETER_BYTES`), then limits the whole read to
:func:`nplstm.io.parameter_budget` of that count and checks every
parameter's header (name, shape, dtype) before reading any data; values are
checked for finiteness before the model is built.  A file that claims a
huge model, or hides a zip bomb, is refused before anything large is
allocated.  Files of the two
earlier schemas (``nplstm.SequenceModel/1``, ``nplstm.StackedLSTM/1``) still
load.  Model classes register themselves with :func:`register`, so this
module imports none of them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from .io import NpzArchive, WeightsFileError, parameter_budget, require, save_npz
from .shapes import as_real_array

__all__ = [
    "save_model", "load_model", "load_model_of_kind", "model_from_arrays", "register", "parse_config", "Persistent",
    "FileKind", "VERSION", "READABLE_VERSIONS", "FORMAT", "DEFAULT_MAX_PARAMETER_BYTES", "MAX_CONFIG_CHARS",
    "MAX_CONFIG_DEPTH",
]

VERSION = 3
#: Versions this nplstm reads (2: a SequenceModel config was flat, one linear output layer).
READABLE_VERSIONS = (2, 3)
FORMAT = "nplstm"

#: Largest parameter set a file may describe unless ``max_bytes`` says otherwise (2 GiB).
DEFAULT_MAX_PARAMETER_BYTES = 1 << 31

_LEGACY_SEQUENCE_MODEL = "nplstm.SequenceModel/1"
_LEGACY_STACK = "nplstm.StackedLSTM/1"
_META = ("format", "version", "kind", "config", "dtype")


class Persistent(Protocol):
    """What a model class offers to be saved and loaded."""

    KIND: str
    dtype: np.dtype

    def config(self) -> dict[str, Any]: ...

    def parameters(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class FileKind:
    """How to rebuild one model class from a file: its parameter shapes and its constructor, from a config."""

    cls: Any
    shapes: Callable[..., dict[str, tuple[int, ...]]]  # (config, max_count) -> {name: shape}
    build: Callable[[dict[str, Any], Any], Any]  # (config, dtype) -> model


_KINDS: dict[str, FileKind] = {}


def register(cls: Any, *, shapes: Callable[..., dict[str, tuple[int, ...]]], build: Callable[[dict[str, Any], Any], Any]) -> None:
    """Make ``cls`` (which has ``KIND``, ``config()`` and ``parameters()``) loadable."""
    _KINDS[cls.KIND] = FileKind(cls, shapes, build)


def save_model(model: Persistent, path: str | os.PathLike) -> Any:
    """Write ``model`` in the one schema (no pickle, atomically)."""
    arrays: dict[str, np.ndarray] = {name: np.asarray(p) for name, p in model.parameters().items()}
    clash = set(arrays) & set(_META)
    assert not clash, f"parameter names clash with the schema: {clash}"
    arrays.update(
        format=np.array(FORMAT),
        version=np.array(VERSION, dtype=np.int64),
        kind=np.array(model.KIND),
        config=np.array(json.dumps(model.config(), sort_keys=True)),
        dtype=np.array(model.dtype.name),
    )
    return save_npz(path, arrays)


#: Largest schema member (format, kind, config text ...) read before the config is checked.
_MAX_META_BYTES = 1 << 16
#: Longest JSON config text and its deepest nesting: checked before ``json.loads`` sees the text.
MAX_CONFIG_CHARS = _MAX_META_BYTES
MAX_CONFIG_DEPTH = 32


def load_model(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_PARAMETER_BYTES) -> Any:
    """Load any nplstm model file (either schema); WeightsFileError for anything malformed.

    ``max_bytes`` bounds the parameters the file's config may describe.
    Every schema takes the same path: the small schema members, then the
    config's parameter count, then :meth:`NpzArchive.limit_to` that
    count's budget, and only then any parameter data.  The archive refuses
    to read a large member before the budget is set.
    """
    source = str(path)
    with NpzArchive(path, max_total_bytes=max_bytes, small_until_limited=_MAX_META_BYTES) as npz:
        meta = {}
        for name in _META:
            if name in npz:
                shape, member_dtype = npz.header(name)
                if math.prod(shape) * member_dtype.itemsize > _MAX_META_BYTES:
                    raise WeightsFileError(f"{source}: member {name!r} is {shape} {member_dtype}, too large for schema data")
                meta[name] = npz.read(name)

        def dtype_of(name: str) -> np.dtype | None:  # from the .npy header: no data read
            return npz.header(name)[1] if name in npz else None

        kind, config, dtype, to_params, current = _schema(meta, source, dtype_of)
        cls, shapes = _expected(kind, config, dtype, source, max_bytes)
        n_params = sum(math.prod(s) for s in shapes.values())
        npz.limit_to(parameter_budget(n_params, np.dtype(dtype).itemsize) + 8 * _MAX_META_BYTES)
        if current:
            members = [n for n in npz.names if n not in meta]
            unexpected = sorted(set(members) - set(shapes))
            if unexpected:
                raise WeightsFileError(f"{source}: arrays {unexpected[:5]} do not belong to a {kind} with config {config}")
            for name, shape in shapes.items():  # every header before any data
                if name not in npz:
                    raise WeightsFileError(f"{source}: missing array {name!r} (expected shape {shape})")
                got, got_dtype = npz.header(name)
                if got != shape:
                    raise WeightsFileError(f"{source}: array {name!r} has shape {got}; expected {shape}")
                if got_dtype.kind != "f":
                    raise WeightsFileError(f"{source}: array {name!r} has dtype {got_dtype}; expected floating point")
        arrays = {**meta, **{n: npz.read(n) for n in npz.names if n not in meta}}
    return _build(cls, kind, config, dtype, to_params(arrays, shapes), shapes, source)


def load_model_of_kind(path: str | os.PathLike, cls: Any, *, max_bytes: int = DEFAULT_MAX_PARAMETER_BYTES) -> Any:
    """Like :func:`load_model`, refusing a file of another kind than ``cls``."""
    model = load_model(path, max_bytes=max_bytes)
    if not isinstance(model, cls):
        raise WeightsFileError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
    return model


def _text(arrays: dict[str, np.ndarray], name: str, source: str) -> str | None:
    """A 0-d text member as str; None when absent or not text."""
    value = arrays.get(name)
    if value is None or value.dtype.kind != "U" or value.ndim != 0:
        return None
    # NumPy stores UTF-32 code units unchecked: one past U+10FFFF (or a surrogate) makes a str Python cannot hold
    units = np.frombuffer(value.tobytes(), dtype=np.uint32)
    if ((units > 0x10FFFF) | ((units >= 0xD800) & (units <= 0xDFFF))).any():
        raise WeightsFileError(f"{source}: member {name!r} holds code points that are not Unicode text")
    return str(value)


def model_from_arrays(arrays: dict[str, np.ndarray], source: str = "arrays", *,
                      max_bytes: int = DEFAULT_MAX_PARAMETER_BYTES) -> Any:
    """Build a model from arrays already in memory (the members of a file), checking everything first."""
    meta = {name: arrays[name] for name in _META if name in arrays}
    kind, config, dtype, to_params, _ = _schema(meta, source, lambda name: arrays[name].dtype if name in arrays else None)
    cls, shapes = _expected(kind, config, dtype, source, max_bytes)
    return _build(cls, kind, config, dtype, to_params(dict(arrays), shapes), shapes, source)


#: ``(all arrays of the file, expected parameter shapes) -> parameters by nplstm name``
_ToParams = Callable[[dict[str, np.ndarray], dict[str, tuple[int, ...]]], dict[str, np.ndarray]]


def _schema(meta: dict[str, np.ndarray], source: str,
            dtype_of: Callable[[str], np.dtype | None]) -> tuple[str, Any, str, _ToParams, bool]:
    """``(kind, config, dtype, to_params, current)`` from the schema members alone.

    ``dtype_of(name)`` gives a member's dtype (from its header) for the
    earlier schemas, which name their dtype only through their arrays;
    ``current`` is False for those schemas.
    """
    tag = _text(meta, "format", source)
    if tag == _LEGACY_SEQUENCE_MODEL:
        return _legacy_sequence_model(meta, source, dtype_of)
    if tag == _LEGACY_STACK:
        return _legacy_stack(meta, source, dtype_of)
    if tag != FORMAT:
        raise WeightsFileError(f"{source}: not an nplstm weights file (format tag {tag!r})")
    version = meta.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) not in READABLE_VERSIONS:
        raise WeightsFileError(f"{source}: unsupported nplstm file version {version!r}; this nplstm reads {list(READABLE_VERSIONS)}")
    config = parse_config(_text(meta, "config", source) or "", source)

    def to_params(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {k: v for k, v in arrays.items() if k not in _META}

    return _text(meta, "kind", source) or "", config, _text(meta, "dtype", source) or "", to_params, True


def parse_config(text: str, source: str) -> Any:
    """``json.loads(text)`` once the text is at most :data:`MAX_CONFIG_CHARS` long and nests at most
    :data:`MAX_CONFIG_DEPTH` deep; WeightsFileError otherwise (never RecursionError)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise WeightsFileError(f"{source}: 'config' is {len(text)} characters, over the limit of {MAX_CONFIG_CHARS}")
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # brackets inside strings do not nest
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_CONFIG_DEPTH:
                raise WeightsFileError(f"{source}: 'config' nests deeper than {MAX_CONFIG_DEPTH} levels")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise WeightsFileError(f"{source}: 'config' is not JSON text") from None


def _expected(kind: str, config: Any, dtype: str, source: str, max_bytes: int) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """The model class and every parameter's shape, from the config alone (no allocation)."""
    if kind not in _KINDS:
        raise WeightsFileError(f"{source}: unknown model kind {kind!r}; expected one of {sorted(_KINDS)}")
    if dtype not in ("float32", "float64"):
        raise WeightsFileError(f"{source}: dtype {dtype!r}; expected float32 or float64")
    cls = _KINDS[kind]
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise WeightsFileError(f"{source}: 'config' must be a JSON object; got {config!r}")
    try:
        shapes = cls.shapes(config, max_bytes // np.dtype(dtype).itemsize)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise WeightsFileError(f"{source}: malformed {kind} config {config}: {type(exc).__name__}: {exc}") from None
    total = sum(math.prod(s) for s in shapes.values()) * np.dtype(dtype).itemsize
    if total > max_bytes:
        raise WeightsFileError(
            f"{source}: config {config} implies {total} bytes of parameters, over the limit of {max_bytes} "
            f"(pass max_bytes= to allow more)"
        )
    return cls, shapes


def _build(cls: Any, kind: str, config: Any, dtype: str, params: dict[str, np.ndarray],
           shapes: dict[str, tuple[int, ...]], source: str) -> Any:
    unexpected = sorted(set(params) - set(shapes))
    if unexpected:
        raise WeightsFileError(f"{source}: arrays {unexpected[:5]} do not belong to a {kind} with config {config}")
    values = {name: require(params, name, shape, source) for name, shape in shapes.items()}
    try:  # a float64 value beyond float32's range must not become inf in a float32 model
        values = {name: as_real_array(value, name, np.dtype(dtype)) for name, value in values.items()}
    except ValueError as exc:
        raise WeightsFileError(f"{source}: {exc}") from None
    try:
        model = cls.build(config, dtype)
    except (TypeError, ValueError) as exc:
        raise WeightsFileError(f"{source}: malformed {kind} config {config}: {exc}") from None
    targets = model.parameters()
    assert set(targets) == set(values), "parameter_shapes and parameters() disagree"
    for name, value in values.items():  # all checked before any is set: nothing partially loaded
        targets[name][...] = value
    return model


# ------------------------------------------------------ earlier schemas
def _legacy_config(arrays: dict[str, np.ndarray], source: str, n: int) -> list[int]:
    cfg = arrays.get("config")
    if cfg is None or cfg.shape != (n,) or cfg.dtype.kind not in "iu":
        raise WeightsFileError(f"{source}: 'config' must be {n} integers")
    values = [int(v) for v in cfg]
    if min(values) < 0 or max(values) > 1 << 30:
        raise WeightsFileError(f"{source}: implausible config {values}")
    return values


def _dtype_of(dtype_of: Callable[[str], np.dtype | None], name: str, source: str) -> str:
    dtype = dtype_of(name)
    if dtype is None or dtype not in (np.float32, np.float64):
        raise WeightsFileError(f"{source}: {name!r} is missing or not float32/float64")
    return np.dtype(dtype).name


def _legacy_sequence_model(meta: dict[str, np.ndarray], source: str,
                           dtype_of: Callable[[str], np.dtype | None]) -> tuple[str, dict[str, Any], str, _ToParams, bool]:
    I, H, O, m2m = _legacy_config(meta, source, 4)
    if m2m not in (0, 1):
        raise WeightsFileError(f"{source}: implausible config {[I, H, O, m2m]}")
    config = {"input_size": I, "hidden_size": H, "output_size": O, "many_to_many": bool(m2m)}

    def to_params(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {
            (f"lstm.l0.{k[5:]}" if k.startswith("lstm.") else k): v
            for k, v in arrays.items() if k not in ("format", "config")
        }

    return "SequenceModel", config, _dtype_of(dtype_of, "lstm.Wf", source), to_params, False


def _legacy_stack(meta: dict[str, np.ndarray], source: str,
                  dtype_of: Callable[[str], np.dtype | None]) -> tuple[str, dict[str, Any], str, _ToParams, bool]:
    """Version-1 stack files hold torch-named tensors (gates i, f, g, o; two biases)."""
    I, H, L, bidirectional, bias, proj, batch_first = _legacy_config(meta, source, 7)
    config = {"input_size": I, "hidden_size": H, "num_layers": L, "bidirectional": bool(bidirectional),
              "bias": bool(bias), "proj_size": proj, "batch_first": bool(batch_first)}

    def convert(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        tensors = {k: v for k, v in arrays.items() if k not in ("format", "config")}
        P = proj or H
        out: dict[str, np.ndarray] = {}
        used = set()
        for l in range(L):
            for d in range(2 if bidirectional else 1):
                sfx = f"_l{l}{'_reverse' if d else ''}"
                prefix = f"l{l}{'_reverse' if d else ''}."
                w_ih = require(tensors, f"weight_ih{sfx}", (4 * H, shapes[prefix + "Wf"][1] - P), source)
                w_hh = require(tensors, f"weight_hh{sfx}", (4 * H, P), source)
                used |= {f"weight_ih{sfx}", f"weight_hh{sfx}"}
                b = None
                if bias:
                    b = require(tensors, f"bias_ih{sfx}", (4 * H,), source) + require(tensors, f"bias_hh{sfx}", (4 * H,), source)
                    used |= {f"bias_ih{sfx}", f"bias_hh{sfx}"}
                for k, gate in enumerate("ifgo"):
                    rows = slice(k * H, (k + 1) * H)
                    suffix = "c" if gate == "g" else gate
                    out[f"{prefix}W{suffix}"] = np.concatenate([w_hh[rows], w_ih[rows]], axis=1)
                    if b is not None:
                        out[f"{prefix}b{suffix}"] = b[rows, None]
                if proj:
                    out[f"{prefix}W_hr"] = require(tensors, f"weight_hr{sfx}", (P, H), source)
                    used.add(f"weight_hr{sfx}")
        extra = sorted(set(tensors) - used)
        if extra:
            raise WeightsFileError(f"{source}: tensors {extra[:5]} do not belong to a stack with this config")
        return out

    return "StackedLSTM", config, _dtype_of(dtype_of, "weight_ih_l0", source), convert, False
