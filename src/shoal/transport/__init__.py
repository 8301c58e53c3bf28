"""Shoal transport layer (see DESIGN.md)."""
