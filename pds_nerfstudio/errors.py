"""The one error type for bad user input, reported as a single line before any heavy work."""


class InputError(ValueError):
    """A flag, path, prompt or model the user gave cannot be used; the message says what to do."""
