"""Shoal: deploy and run distributed applications on many machines.

The public API is re-exported here lazily (importing ``shoal`` stays cheap).
"""

from __future__ import annotations

__version__ = "0.1.0"
