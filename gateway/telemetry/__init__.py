"""What happened: one CallRecord per call for the request log, metrics, traces, callbacks."""
