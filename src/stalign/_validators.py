"""Argument checks shared by every stage: one wording for every "this number is out of range" error.

Each check raises :class:`TypeError` when the value has the wrong type (bools are refused where a number is expected:
``True`` is an ``int`` in Python) and :class:`ValueError` when it is out of range. The message names the argument,
the value, and what it must be, plus an optional ``hint`` (an example or a consequence), so every error tells the
user what is wrong and how to fix it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_INTS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def _fail(exc: type[Exception], name: str, value: Any, what: str, hint: str, *, show_type: bool) -> None:
    kind = f" ({type(value).__name__})" if show_type else ""
    msg = f"{name}={value!r}{kind}; it must be {what}{hint}."
    raise exc(msg)


def check_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False, hint: str = "") -> int | None:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (or ``None`` when allowed), else a clear error.

    Parameters
    ----------
    value
        The argument.
    name
        Its name, as the user wrote it.
    minimum
        Smallest accepted value.
    allow_none
        Accept ``None`` (returned as is).
    hint
        Appended to the message, e.g. ``" (spots per forward pass, e.g. 256)"``.

    Returns
    -------
    The value as a Python ``int``, or ``None``.
    """
    if value is None and allow_none:
        return None
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    what += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, _INTS):
        _fail(TypeError, name, value, what, hint, show_type=True)
    if value < minimum:
        _fail(ValueError, name, value, what, hint, show_type=False)
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float = 0.0,
    strict: bool = True,
    maximum: float | None = None,
    maximum_inclusive: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> float | None:
    """``value`` as a ``float`` if it is a finite number in range (or ``None`` when allowed), else a clear error.

    Parameters
    ----------
    value, name
        The argument, and its name as the user wrote it.
    minimum
        Lower bound.
    strict
        ``value > minimum`` (``True``) or ``value >= minimum``.
    maximum
        Upper bound, if any (exclusive unless ``maximum_inclusive``).
    maximum_inclusive
        Accept ``value == maximum``.
    allow_none
        ``None`` is accepted and returned unchanged.
    hint
        Text for the end of the error message, e.g. ``" (e.g. 5e-4)"``.

    Returns
    -------
    ``float(value)``, or ``None``.
    """
    if value is None and allow_none:
        return None
    if maximum is not None:
        what = f"a number in {'(' if strict else '['}{minimum:g}, {maximum:g}{']' if maximum_inclusive else ')'}"
    elif minimum == 0:
        what = "a finite positive number" if strict else "a finite non-negative number"
    else:
        what = f"a finite number {'>' if strict else '>='} {minimum:g}"
    what += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        _fail(TypeError, name, value, what, hint, show_type=True)
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if maximum is not None:
        ok = ok and (value <= maximum if maximum_inclusive else value < maximum)
    if not ok:
        _fail(ValueError, name, value, what, hint, show_type=False)
    return float(value)


def check_key(key_added: Any, *, name: str = "key_added") -> str:
    """``key_added`` if it is a non-empty string (checked before any work is done), else a clear error."""
    if not isinstance(key_added, str) or not key_added:
        msg = (
            f"{name}={key_added!r}; it must be a non-empty string (the obsm/uns key the result is stored under), "
            f"e.g. {name}='my_result', got {key_added!r}."
        )
        raise TypeError(msg) if not isinstance(key_added, str) else ValueError(msg)
    return key_added


def renamed_arguments(**renames: str):
    """Decorator: keyword arguments renamed in this release still work, with a ``FutureWarning``, until the next one.

    ``@renamed_arguments(seed="random_state")``: ``f(seed=1)`` calls ``f(random_state=1)`` and warns; passing both
    names is an error. The signature (``inspect.signature``) shows the new names only.
    """
    import functools
    import warnings

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        msg = f"{func.__name__}() got {old}= (its old name) and {new}=; pass {new}= only."
                        raise TypeError(msg)
                    warnings.warn(
                        f"{func.__name__}({old}=...) is renamed {new}=; the old name will be removed in the next "
                        "release.",
                        FutureWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate
