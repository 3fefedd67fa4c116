"""FPGA back end (import name ``step_deploy.fpga``): HLS C++ generation (``hls_writer``,
``hls_layers``, kernel templates in ``templates/``), C simulation with g++ (``csim``) and its
parity with the integer golden model (``parity``), FPGA parts (``parts``) and resource/latency
estimates (``estimate``). ``step-export --target fpga`` drives it (``step_deploy.export.fpga``)."""
