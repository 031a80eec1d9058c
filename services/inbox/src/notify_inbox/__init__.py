"""Notify inbox service."""
