"""Notify email-digest: immediate critical email, the daily digest, the daily quota."""
