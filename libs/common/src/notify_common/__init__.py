"""Shared code of every Notify service. Services never import each other; they import this."""
