"""Training: the one driver (loop.py), its samplers, and one thin spec per trainer."""
