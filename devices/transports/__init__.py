"""Transports: they only open links and move bytes."""
