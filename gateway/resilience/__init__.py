"""Breaker, retries and deadline around every operator call, in one place (see guard.py)."""
