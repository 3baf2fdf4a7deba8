"""mailforge: a mail server suite with a prefork process model and a durable queue."""

__version__ = "0.1.0"
