"""Model groups: the call loop, choosing a deployment, shared state, health checks."""
