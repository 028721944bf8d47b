"""alf: bulk data over imperfect networks, with application-level framing."""

__version__ = "0.1.0"
