"""chatgate: the chat service of a webmail hosting platform."""

__version__ = "0.1.0"
