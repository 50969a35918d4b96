"""Argument checks that several modules share, written once (a leaf: imports only NumPy).

Each raises the error that names the argument, as the rest of the package does.
"""

from numbers import Integral

__all__ = ["is_array_like", "check_array_like", "check_height_width"]


def is_array_like(X):
    """Whether ``X`` may be converted to an array of images, masks or labels.

    True for NumPy arrays, sequences and objects with ``__array__``; False for
    strings and bytes (a path, not an array) and for scalars such as None.
    """
    return not isinstance(X, (str, bytes)) and (hasattr(X, "__len__")
                                                 or hasattr(X, "__array__"))


def check_array_like(X, *, name, what):
    """Raise a TypeError ``"{name} must be {what}; got <type>."`` unless
    :func:`is_array_like`; return ``X`` unchanged."""
    if not is_array_like(X):
        raise TypeError(f"{name} must be {what}; got {type(X).__name__}.")
    return X


def check_height_width(value, *, name, positive=True, allow_none=False):
    """``value`` as a tuple ``(height, width)`` of ints; a ValueError naming ``name`` otherwise.

    Parameters
    ----------
    value : pair of int or None
        The size to check.
    name : str
        How the error names the argument, e.g. ``"size"`` or ``"The 'input_size'
        parameter"``.
    positive : bool, default=True
        Whether 0 is refused (a resize target) or allowed (the shape of an empty
        mask).
    allow_none : bool, default=False
        Whether None is a valid value (returned as it is).

    Returns
    -------
    size : tuple of (int, int) or None
    """
    if value is None and allow_none:
        return None
    message = (f"{name} must be a pair (height, width) of "
               f"{'positive' if positive else 'non-negative'} integers"
               f"{' or None' if allow_none else ''}; got {value!r}.")
    if isinstance(value, (str, bytes)):
        raise ValueError(message)
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ValueError(message) from None
    for side in (height, width):
        if (isinstance(side, bool) or not isinstance(side, Integral)
                or side < (1 if positive else 0)):
            raise ValueError(message)
    return int(height), int(width)
