"""Upstream I/O, the one place its socket/HTTP errors are mapped: the transport (HTTP, also for the
callback sinks), sdk (boto3 calls), the shared call flow and its streams, SSE."""
