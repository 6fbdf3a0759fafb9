"""What several examples share, written once."""
