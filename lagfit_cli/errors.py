"""The one exception type that reaches the user as a single clear line."""


class LagfitError(Exception):
    """A problem with the user's input or data: printed as one line, exit code 2.

    The message must name what is wrong (the config key, file, column or cause) and,
    where it helps, what would be accepted instead.
    """
