"""The ``gyre`` command line (see ``gyre --help``)."""
