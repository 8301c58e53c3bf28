"""Shoal app layer (see DESIGN.md)."""
