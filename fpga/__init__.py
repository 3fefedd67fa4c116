"""FPGA back end (import name ``step_deploy.fpga``): HLS C++ generation and C simulation.
Not built yet; ``step-export --target fpga`` says so."""
