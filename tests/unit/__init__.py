"""Unit tests: pure functions and the app through Flask's in-process test client."""
