"""Runnable examples of tether: run one with `python -m examples.<name>`."""
