"""Shoal ops layer (see DESIGN.md)."""
