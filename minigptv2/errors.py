"""The one exception type library users catch: every bad input (file, image, text, config) raises it."""


class MiniGPTv2Error(ValueError):
    """A clear, user-facing error: the message names the file, key, record or value at fault."""
