"""Kafka plumbing shared by every service: client config, producer, topics, consumer runner."""
