"""Shoal fanout layer (see DESIGN.md)."""
