"""Process-level building blocks shared by the packages: shared-memory tables."""
