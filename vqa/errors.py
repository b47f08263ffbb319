"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a file, a field, a value). The message names what is wrong, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
