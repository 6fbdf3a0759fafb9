"""Sharded fine-tuning of a byte-level transformer LM with PROFIT vs AdamW."""
