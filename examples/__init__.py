"""Example apps built on the Nudge SDK (run them with ``python -m examples.<name>.app``)."""
