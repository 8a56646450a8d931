"""The one exception type the package raises for bad input: its message is a single line for the user."""


class MaxWhisperError(Exception):
    """A user-facing error: what is wrong and how to fix it, in one line."""
