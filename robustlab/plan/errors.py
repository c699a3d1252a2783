"""The error a plan raises on bad input: one line naming the key, the value and the valid choices."""


class ConfigError(ValueError):
    """A bad value in the composed config; the message is one line naming it."""
