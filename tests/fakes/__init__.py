"""Fake upstream servers (real HTTP on loopback) used by the gateway test suites."""
