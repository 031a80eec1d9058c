"""Notify realtime: Server-Sent Events per user, resumable with Last-Event-ID."""
