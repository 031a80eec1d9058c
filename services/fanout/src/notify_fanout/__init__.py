"""Notify fanout service."""
