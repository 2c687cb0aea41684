"""Firewall log readers: one module per input format, all yielding the same event record."""
