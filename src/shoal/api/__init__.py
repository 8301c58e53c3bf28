"""Shoal api layer (see DESIGN.md)."""
