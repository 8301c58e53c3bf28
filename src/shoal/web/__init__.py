"""Shoal web layer (see DESIGN.md)."""
