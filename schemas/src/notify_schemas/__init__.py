"""Notify's event contracts."""
