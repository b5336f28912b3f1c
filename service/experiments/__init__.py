"""Continual-learning experiments (``dreamfix experiment``): metrics and plots."""
