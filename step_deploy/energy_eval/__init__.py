"""Energy over data sets (orchestration above passes and simulators): count a checkpoint's runs
through PyTorch or a golden model (``run``), the ``step-energy`` command (``command``), the
weight-bits x time-steps sweep (``sweep``) and the energy section of ``step-export`` reports
(``deployed``). What is counted and how it is priced lives in ``step_deploy.energy``."""
