"""The ``streamsynth`` command line."""
