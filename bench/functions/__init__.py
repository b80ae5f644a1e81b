"""Function cold-start benchmark (see run.py and README.md)."""
