"""Upstream I/O: the transport (the one place I/O errors are mapped), streams, SSE."""
