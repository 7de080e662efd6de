"""The one error type for bad user input, reported as a single line before any heavy work."""

from typing import Any, Tuple, Type


class InputError(ValueError):
    """A flag, path, prompt or model the user gave cannot be used; the message says what to do."""


def check_ratio_range(flag: str, ratio_range: Tuple[float, float]) -> None:
    """Raise InputError unless ``ratio_range`` (the value of ``flag``) is (min, max) with 0 <= min <= max <= 1."""
    low, high = ratio_range
    if not 0.0 <= low <= high <= 1.0:
        raise InputError(f"{flag} {low} {high}: need 0 <= min <= max <= 1")


def run_command(command_type: Type[Any]) -> Any:
    """Parse a command's flags with tyro (``--help`` from its docstrings) and run its ``main()``; bad input ends
    with one line, ``error: ...``, saying what to do."""
    import tyro

    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(command_type)
    try:
        return command.main()
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
