"""Configurations of the toy example: ``default`` (paper scale) and ``quick``."""
