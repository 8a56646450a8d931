"""The one exception type the package raises for bad input: its message is a single line for the user."""


class MaxWhisperError(Exception):
    """A user-facing error: what is wrong and how to fix it, in one line."""


def reason(exc: BaseException, last: bool = False, typed: bool = False) -> str:
    """One line of a library exception's message (its first, or its last; `typed`: after its type's name), or its
    type's name where the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = (lines[-1] if last else lines[0]) if lines else ""
    return f"{type(exc).__name__}: {line}" if typed and line else line or type(exc).__name__
