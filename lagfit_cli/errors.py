"""The exceptions that reach the user as a single clear line."""

from __future__ import annotations


class LagfitError(Exception):
    """A problem with the user's input or data: printed as one line, exit code 2.

    The message must name what is wrong (the argument, file, column or cause) and, where it
    helps, what would be accepted instead.
    """


class ArgumentError(LagfitError):
    """A bad value of one argument of the Python API, named by ``argument``.

    ``argument`` is the keyword the caller passed (``"solver"``, ``"params.m"``, ``"path"``);
    the command line maps it to its config key (``solver.name``, ``system.params.m``,
    ``data.path``), so the same error reads right in a notebook and in a terminal.
    """

    def __init__(self, argument: str, detail: str):
        self.argument, self.detail = argument, detail
        super().__init__(f"{argument}: {detail}")


def printable(text: object, limit: int = 2000) -> str:
    """``text`` safe to echo on one terminal line: control characters (newlines, terminal
    escapes) become ``?``, and at most ``limit`` characters are kept."""
    import unicodedata

    cleaned = "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(text)
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
