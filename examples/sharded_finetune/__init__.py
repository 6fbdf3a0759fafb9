"""Sharded fine-tuning of a byte-level transformer LM with PROFIT vs AdamW.

Run it from the repository root with
``python -m examples.sharded_finetune.main --quick --host-devices 8``.
"""
