"""Configurations of the sharded fine-tuning example: ``default`` and ``quick``."""
