"""Shoal testing layer (see DESIGN.md)."""
