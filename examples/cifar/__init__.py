"""CIFAR-10 -> CIFAR-100 fine-tuning with PROFIT (paper Sec. 4.2, Table 2)."""
