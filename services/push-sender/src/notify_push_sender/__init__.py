"""Notify push-sender: Web Push delivery."""
