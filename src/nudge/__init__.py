"""Nudge: a self-hostable, Omi-compatible notification platform."""

__version__ = "0.1.0"
