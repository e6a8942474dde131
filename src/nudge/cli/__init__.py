"""The ``nudge`` command line."""
