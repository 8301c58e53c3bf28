"""The ``shoal`` command line: a thin adapter that parses, calls the library, renders."""
