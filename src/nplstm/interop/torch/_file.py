"""Saved ``.pt`` files: read with ``weights_only=True`` and checked before anything is built."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from ...stack import StackedLSTM
from ..gates import InteropError, open_framework_file
from ._model import from_torch


def load_torch(path: str | os.PathLike, **kwargs: Any) -> StackedLSTM:
    """Read a ``.pt`` file holding a ``torch.nn.LSTM`` state dict (or a whole model's).

    The file must be a regular file.  Its zip directory is checked before
    torch reads it (:func:`~nplstm.io.check_zip_budget`): at most
    :data:`~nplstm.io.DEFAULT_MAX_TOTAL_BYTES` declared, and no more than
    twice its size on disk, since ``torch.save`` stores tensors uncompressed;
    so a compressed zip bomb is refused before it is inflated.  Then
    ``torch.load(..., weights_only=True)``: tensors and plain containers only,
    never arbitrary pickled objects.  Before any tensor becomes an array,
    each must be dense and lie inside its stored bytes (no stride 0, no
    overlap), so the model is never larger than the file's data; then
    :func:`from_torch` checks the names (layers l0..l{L-1}, no gaps), shapes
    and size.  ``kwargs`` go to :func:`from_torch`: ``batch_first=`` is
    required for an LSTM's state dict (the file does not record the
    layout), and ``lstm=``, ``head=``, ``embedding=``, ``output=`` read a
    whole model's state dict.
    """
    import warnings
    import zipfile

    import torch

    from ...io import DEFAULT_MAX_TOTAL_BYTES, WeightsFileError, check_zip_budget

    with open_framework_file(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if zipfile.is_zipfile(fh):
                check_zip_budget(fh, DEFAULT_MAX_TOTAL_BYTES, max_expansion=2)
            elif size > DEFAULT_MAX_TOTAL_BYTES:  # torch's legacy (non-zip) format: read as it is stored
                raise WeightsFileError(f"{path}: {size} bytes, over the limit of {DEFAULT_MAX_TOTAL_BYTES}")
            fh.seek(0)
            with warnings.catch_warnings():  # torch warns about odd pickle protocols in junk files
                warnings.simplefilter("ignore", UserWarning)
                sd = torch.load(fh, map_location="cpu", weights_only=True)
        except WeightsFileError as exc:
            raise InteropError(str(exc)) from None
        except Exception as exc:  # torch.load raises many kinds (UnpicklingError, RuntimeError, zip errors, ...)
            # one line saying what nplstm needs, never torch's advice to retry with weights_only=False
            text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))  # torch's message has terminal escapes
            found = re.search(r"Unsupported global: GLOBAL ([A-Za-z_][\w.]*)", text)
            what = f"it holds a pickled {found.group(1)} object" if found else type(exc).__name__
            raise InteropError(
                f"{path} is not a loadable weights-only torch file ({what}); "
                "nplstm needs a state_dict() saved with torch.save, e.g. torch.save(lstm.state_dict(), path)"
            ) from None
    if not isinstance(sd, Mapping):
        raise InteropError(f"{path} holds a {type(sd).__name__}; nplstm needs a state_dict() saved with torch.save")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InteropError(f"{path}: entries that are not named tensors: {bad[:5]}")
    _check_stored(sd, path)
    try:
        return from_torch(sd, **kwargs)
    except InteropError as exc:
        raise InteropError(f"{path}: {exc}") from None


def _check_stored(sd: Mapping[str, Any], path: Any) -> None:
    """Refuse tensors whose elements the file does not really store, before any is read into an array.

    ``torch.save`` writes a tensor's storage plus its shape and strides, so
    a 1-element storage with stride 0 can claim (65536, 16384) elements.
    Every tensor must be dense and strided, each element at its own offset
    (strides sorted ascending each exceed the span of the dimensions below
    them: no stride 0, no overlap), that span inside its storage; and all
    tensors together claim no more bytes than their distinct storages hold.
    So a model loaded from a file is never larger than the file's data.
    """
    import torch

    held: dict[int, int] = {}
    claimed = 0
    for name, t in sd.items():
        if t.layout != torch.strided:
            raise InteropError(f"{path}: tensor {name!r} has layout {t.layout}; nplstm reads dense tensors only")
        storage = t.untyped_storage()
        held[storage.data_ptr()] = max(held.get(storage.data_ptr(), 0), storage.nbytes())
        if t.numel() == 0:
            continue  # holds nothing; its shape is checked with the others
        span = 1  # elements covered by the dimensions seen so far
        for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
            if stride < span:
                raise InteropError(
                    f"{path}: tensor {name!r} of shape {tuple(t.shape)} has strides {t.stride()}, which repeat "
                    "stored elements (stride 0 or overlapping); save a dense tensor (t.contiguous()) instead"
                )
            span += stride * (size - 1)
        end = (t.storage_offset() + span) * t.element_size()
        if t.storage_offset() < 0 or end > storage.nbytes():
            raise InteropError(
                f"{path}: tensor {name!r} of shape {tuple(t.shape)} needs {end} bytes of storage; "
                f"the file stores {storage.nbytes()}"
            )
        claimed += t.numel() * t.element_size()
    if claimed > sum(held.values()):
        raise InteropError(
            f"{path}: its tensors claim {claimed} bytes but share only {sum(held.values())} stored bytes "
            "(tensors overlapping one another)"
        )
