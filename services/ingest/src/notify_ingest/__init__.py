"""Notify ingest service."""
