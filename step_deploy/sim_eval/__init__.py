"""Orchestration of the cycle-level simulator: ``step-sim``."""
