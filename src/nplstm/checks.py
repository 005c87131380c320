"""Argument checks shared by every constructor and setter: one function per kind of argument.

Each returns the value normalised (a Python int, float or bool) or raises
with the argument's name in the message, so every entry point refuses the
same things in the same words.  ``bool`` is refused wherever a number is
wanted (``True`` would silently be 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_real_number", "positive_int", "flag", "config_flag", "dropout_rate", "thread_count"]


def is_real_number(value: object) -> bool:
    """An int or float (NumPy scalars too), but not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def flag(value: Any, name: str) -> bool:
    """``value`` as a bool; TypeError for anything but True/False (``bool("no")`` would be True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def config_flag(config: dict[str, Any], name: str, default: bool = False) -> bool:
    """The boolean ``config[name]`` of a JSON config (``default`` when absent); TypeError otherwise."""
    value = config.get(name, default)
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false; got {value!r}")
    return value


def dropout_rate(value: Any, name: str = "dropout") -> float:
    """A dropout probability in [0, 1) as a float, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def thread_count(value: Any, name: str = "threads") -> int | None:
    """An integer >= 1, or None (meaning: decide by the machine); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 or None; got {value!r}")
    return int(value)
