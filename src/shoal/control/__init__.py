"""The standing controller's machinery as a library (``shoal serve`` is its adapter)."""
