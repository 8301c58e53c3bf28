"""Shoal agent layer (see DESIGN.md)."""
