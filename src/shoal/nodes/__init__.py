"""Shoal nodes layer (see DESIGN.md)."""
