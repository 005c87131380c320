"""Argument types of the command line: every number and output path is checked while parsing."""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, NoReturn


def _one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


def int_option(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number in ``[low, high]``, else a message naming the range."""
    if high is not None:
        wanted = f"an integer from {low} to {high}"
    else:
        wanted = "a non-negative integer" if low == 0 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return value

    return parse


def output_path(*suffixes: str) -> Callable[[str], Path]:
    """An argparse ``type=``: a file to write, with one of ``suffixes``, in an existing writable folder.

    An existing directory is refused rather than written into, so the file
    written is always the one named.
    """
    wanted = " or ".join(suffixes)

    def parse(text: str) -> Path:
        path = Path(text)
        try:
            return check(text, path)
        except OSError as exc:  # a name too long, a symlink loop ...: one line, a usage error
            raise argparse.ArgumentTypeError(os_error_message(exc, text)) from None

    def check(text: str, path: Path) -> Path:
        try:
            mode: int | None = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # a new file; its folder is checked below
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name ending in {wanted}")
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: output must end in {wanted}")
        if mode is not None and not stat.S_ISREG(mode):
            raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file; nplstm does not save over it")
        folder = path.parent
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: folder {str(folder)!r} does not exist")
        try:  # a real probe: saves write a temp file in this folder, and this meets what they will meet
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text}: folder {str(folder)!r} is not writable ({exc.strerror})") from None
        return path

    return parse


def _column_list(text: str) -> list[str]:
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"expected column indices or names separated by commas; got {text!r}")
    return columns



def os_error_message(exc: OSError, path: object = None) -> str:
    """``<path>: <what the OS said>`` for any OSError (no ``[Errno N]``, the user's path named once)."""
    name = exc.filename if exc.filename is not None else path
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{name}: {what}" if name is not None else what



class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")
