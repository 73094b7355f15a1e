"""Base utilities shared by every layer: errors, units, elements, periodic cells, progress, quiet."""
