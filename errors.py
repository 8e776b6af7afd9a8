"""The project's exceptions.  Imports nothing of the project, so that every package can raise them.

main.py turns a :class:`UserError` into one line ``error: ...`` and exit code 1, and a :class:`TrainingInterrupted`
into its message and exit code 128 + the signal number.  Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix (bad flag, config, data or path).  main.py prints it as one line and exits 1."""


class ConfigError(UserError):
    """A config value (or a combination of values) that cannot work; ``key`` names the config key when there is one
    (``"model.ngf"``), as data, so that no caller has to read it out of the message."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


class ArgumentError(ValueError):
    """A network constructor argument that cannot work: ``argument`` is its name (``"ngf"``), ``detail`` what is
    wrong with it; the message is ``"<argument> <detail>"``.  A runner maps ``argument`` to its config key."""

    def __init__(self, argument, detail):
        super().__init__(f"{argument} {detail}")
        self.argument, self.detail = argument, detail


class NonFiniteLoss(UserError):
    """Training produced a non-finite loss or non-finite weights; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Raised after a clean stop on SIGINT/SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def is_allocation_error(error):
    """True for a failed memory allocation (host or device), which must not be reported as, say, missing data."""
    import torch
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text
                                                 or "failed to allocate" in text)


def describe(value, limit=40):
    """A short, one-line description of a value for error messages: ``torch.float32 tensor of shape [2, 3]`` for a
    tensor or array (anything with a dtype and a shape), else :func:`excerpt`."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return " ".join(excerpt(value, limit).split())


def excerpt(value, limit=60):
    """A repr of ``value`` cut to about ``limit`` characters, for error messages: ``repr(value)`` when that is short,
    else its first ``limit`` characters, ``...`` and the size of the value, e.g. ``'xxxx... (1000000 characters)``.

    Never builds the whole repr: containers are walked lazily and only until ``limit`` characters are out, so a YAML
    alias bomb (a few nodes that expand to gigabytes), a self-containing list or an integer of a million digits
    costs microseconds.  Types other than str, bytes, numbers and the built-in containers (e.g. dates) use their
    ``repr``, which is short for every type that YAML makes.
    """
    out, n = [], 0
    for piece in _repr_pieces(value, limit):
        out.append(piece)
        n += len(piece)
        if n > limit:
            return "".join(out)[:limit] + "... (" + _size(value) + ")"
    return "".join(out)


def _size(value):
    def count(n, unit):
        return f"{n} {unit}{'' if n == 1 else 's'}"
    if isinstance(value, str):
        return count(len(value), "character")
    if isinstance(value, (bytes, bytearray)):
        return count(len(value), "byte")
    if isinstance(value, int):
        return _int_digits(value)[1] + " digits"
    if isinstance(value, dict):
        return count(len(value), "key")
    if isinstance(value, (list, tuple, set, frozenset)):
        return count(len(value), "item")
    return type(value).__name__


_EXACT_DIGITS = 20000        # up to this many digits an int's digit count and leading digits are computed exactly


def _int_digits(value, lead=64):
    """``(leading digits, number of digits)`` of an int, both strings, without ``str()`` (which refuses more than
    4300 digits and is quadratic): the count is ``about N`` beyond _EXACT_DIGITS digits, and then no digits are given.
    """
    import math

    a = abs(value)
    if a < 10 ** lead:
        return repr(a), str(len(repr(a)))
    e = int(math.log10(a))                      # a float estimate of the exponent; fixed below when it is cheap
    if e >= _EXACT_DIGITS:
        return "", f"about {e + 1}"
    p = 10 ** e
    if p > a:
        e, p = e - 1, p // 10
    elif p * 10 <= a:
        e, p = e + 1, p * 10
    return repr(a // 10 ** (e + 1 - lead)), str(e + 1)


def _repr_pieces(value, limit):
    """The pieces of ``repr(value)``, lazily; strings and ints longer than ``limit`` give only their start."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        yield repr(value)
    elif isinstance(value, int):
        digits, count = _int_digits(value)
        sign = "-" if value < 0 else ""
        yield sign + digits if digits else f"<{sign}int of {count} digits>"
    elif isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        yield repr(value[:limit + 1])[:-1]      # without the closing quote: the value goes on
    elif isinstance(value, (str, bytes)):
        yield repr(value)
    elif isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            if i:
                yield ", "
            yield from _repr_pieces(k, limit)
            yield ": "
            yield from _repr_pieces(v, limit)
        yield "}"
    elif isinstance(value, (list, tuple, set, frozenset)):
        if isinstance(value, (set, frozenset)) and not value:
            yield f"{type(value).__name__}()"
            return
        opening, closing = {list: "[]", tuple: "()"}.get(type(value), "{}")
        if isinstance(value, frozenset):
            opening, closing = "frozenset({", "})"
        yield opening
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _repr_pieces(item, limit)
        if isinstance(value, tuple) and len(value) == 1:
            yield ","
        yield closing
    else:
        yield repr(value)
