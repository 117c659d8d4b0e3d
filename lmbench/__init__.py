"""lmbench: a research harness for training and comparing small language models."""

__version__ = "0.1.0"
