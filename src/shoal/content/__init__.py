"""Shoal content layer (see DESIGN.md)."""
