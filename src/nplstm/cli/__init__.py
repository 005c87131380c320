"""The ``nplstm`` command line (also ``python -m nplstm``).

Exit codes: 0 success, 1 a bad input or weights file, 2 a usage error.
Errors are one line on stderr (``nplstm <command>: error: ...``);
``--debug``, before or after the command, shows the traceback instead.

Every numeric option and every output path is checked while the arguments
are parsed, so a mistake is reported before any file is read or any work
is done.  Every file problem, whether nplstm's own check or the OS refusing
(a name over 255 bytes, a symlink loop, a directory, no permission, a full
disk), goes through one handler (``_classify`` in ``_main``) and is one line naming
the path: exit code 2 for an output option refused while parsing, else 1.

``run`` and ``info`` take every model :func:`nplstm.loading.load_model`
returns, including an :class:`~nplstm.interop.onnx.OnnxLSTM` (a
reverse-only ONNX LSTM, or one with constant initial states or lengths);
``plot`` draws a plain forward stack and refuses such an OnnxLSTM by name.

The code lives in private modules: ``_args`` (argument types), ``_inputs``
(the input readers :func:`nplstm.io.read_csv` and :func:`nplstm.io.read_input`),
``_commands`` (one function a command) and ``_main`` (the parser and the one
error handler).
"""

from __future__ import annotations

from ._main import build_parser, main

__all__ = ["main", "build_parser"]
