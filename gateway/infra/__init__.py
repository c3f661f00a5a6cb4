"""Process-level building blocks shared by the packages: shared memory (shm), the Redis client
(redis), gevent helpers (coop) and redaction of secrets (redact)."""
