"""Tests for the gateway."""
