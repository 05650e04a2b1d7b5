"""The ``cellclr`` command line."""
