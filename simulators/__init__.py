"""Simulators (import name ``step_deploy.simulators``): the reference interpreter (float and
integer modes), and the Lava runner. The reference interpreter defines the IR's semantics."""
