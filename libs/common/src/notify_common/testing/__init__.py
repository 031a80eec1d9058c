"""Test and dev infrastructure: real brokers and databases, started and stopped by PID."""
