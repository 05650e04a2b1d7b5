"""The ``cellclr`` command line: ``main`` builds one sub-command per ``Verb`` of the modules
``images``, ``store``, ``learning``, ``profiling`` and ``runs``."""

from cellclr.cli.main import main

__all__ = ["main"]
