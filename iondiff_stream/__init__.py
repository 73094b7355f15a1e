"""iondiff_stream."""
