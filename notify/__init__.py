"""notify: send, track and prove data-breach notices."""

__version__ = "0.1.0"
