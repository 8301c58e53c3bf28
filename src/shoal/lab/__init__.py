"""Shoal lab layer (see DESIGN.md)."""
