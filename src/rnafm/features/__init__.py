"""Tile features: file IO (TRIDENT, CLAM, SEQUOIA/RNA-FM layouts), k-means cluster means, encoders.

Submodules are imported on demand; importing this package does no work and loads no heavy library.
"""

from __future__ import annotations
