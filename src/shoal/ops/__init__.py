"""Shoal fleet operations: sweep (later audit, rollout and log collection); see DESIGN.md."""
