"""Resource and latency **estimates** of the HLS design generated for a quantized (``'fpga-int'``)
graph on an FPGA part, per layer and in total, from a per-layer parallelism ``P``.

    part = load_part("zcu104")
    est = estimate(qgraph, part, clock_mhz=200, parallelism=auto_parallelism(qgraph, part))
    print(fit_table(est)); est.fits(); est.latency_ms

Model (an estimate, not synthesis results; every constant below is a stated assumption)
----------------------------------------------------------------------------------------
Schedule. Time steps outermost; inside a step the layers run one after another in graph order
(no DATAFLOW overlap). ``cycles_per_sample = T × Σ_layers (cycles_per_step + PIPELINE_DEPTH)``
with ``PIPELINE_DEPTH = 8`` cycles of pipeline fill per layer per step;
``latency_ms = cycles_per_sample / (clock_mhz · 1000)``. All state (membranes, readout sums) and
every layer's output buffer stay on chip for the whole sample; state is cleared on the fly in
step 0 (no extra cycles). Weights are ``const`` ROMs on chip. The cycle-level FPGA simulator
(``simulators.cycle.fpga_dataflow``) times every kernel with the same per-layer formula
(``resource_model.step_cycles``), so its ``'step'`` schedule reproduces these cycles exactly.

Per compute node, ``P`` lanes in parallel (``P`` capped at the parallel dimension ``N``):
  * ``FpgaConv2d`` / ``FpgaConv1d`` / ``FpgaLinear``: P output channels, inner loop II = 1 over the
    fan-in: ``cycles = ceil(C_out / P) × positions × fan_in`` (fan_in = in_channels/groups ×
    kernel, or in_features; positions = output pixels or tokens). Spike input (0/1): each lane is a
    gated ``acc_bits`` adder plus an ``out_bits`` round/saturate stage, 0 DSP; multi-bit input
    (8-bit pixels, counts): 1 DSP per lane (2 when the operands exceed the 27 × 18 multiplier) plus
    the ``out_bits`` output stage in LUTs. Weights (+ bias in ``acc_bits``, a 6-bit shift per
    channel) partitioned cyclically P ways over output channels.
  * ``FpgaLIF``: ``cycles = ceil(N / P)``, ``4 × membrane_bits`` LUTs per lane (add, shift,
    compare, mux); STEP's ILIF (``fire='round'``, D levels) adds ``(D - 1) × (membrane_bits + 1)``
    (its comparator ladder: no divider), a soft reset ``spike_bits × membrane_bits`` (subtract
    ``S·θ``); membrane ``N × membrane_bits`` bits in P banks. Integer spikes are
    ``ceil(log2(D + 1))``-bit values in the output buffer (``storage_bits``) and a synapse they feed
    multiplies them (a multi-bit input: 1 DSP per lane, above).
  * ``MatMul``: P outputs per cycle; both operands spikes: AND + popcount on 64-bit words,
    ``cycles = ceil(outputs / P) × ceil(K / 64)``, ``64 + 2 × out_bits`` LUTs per lane; one operand
    multi-bit: gated accumulate, ``ceil(outputs / P) × K``, ``out_bits`` LUTs per lane; both
    multi-bit: 1 DSP per lane.
  * ``Add`` (``(inputs - 1) × bits`` LUTs per lane), ``Mul`` (AND: 1 LUT; spike × value: ``bits``;
    else 1 DSP), ``Transpose`` (copy, ``bits`` LUTs of routing), ``FpgaTemporalSum`` (add +
    saturate, ``2 × bits``; its output is its state): ``ceil(elements / P)``; ``MaxPool2d`` (×
    window, ``2 × bits``), ``Sum`` (× reduced length, ``bits``).
  * Ternary spikes (-1/0/+1, ``ap_int<2>``): a ternary ``FpgaLIF`` adds its ``-θ`` comparator
    (``membrane_bits + 1`` LUTs per lane); a synapse or ``MatMul`` they feed adds or subtracts (0
    DSP; ``2 × acc_bits + out_bits`` / ``2 × out_bits`` LUTs per lane).
  * The seed attention ops: ``ReLU`` (``bits`` LUTs per lane, ``ceil(elements / P)``);
    ``Shiftmax`` per row lane a max comparator, a subtractor, two barrel shifters, an adder and a
    leading-zero counter (0 DSP), three passes over each row: ``ceil(rows / P) × 3 × length``;
    ``TemporalBlockSum`` (window op of B steps, latency ``B - 1``) an accumulator of ``bits`` LUTs
    per lane, two passes (accumulate, write) per step: ``2 × ceil(elements / P)``. A graph holding a
    window op runs block-major (``hls_writer``): every output buffer holds the block's ``B`` steps
    (``B × storage_bits``).
  * ``Reshape`` / ``Flatten``: free (same memory). ``FpgaQuantizeInput``: on the host, 0 resources.
    ``Input`` / ``Output``: ports (their interface adapters are in the design control overhead).
  * Memories: weights ``count × weight_bits``, state ``N × membrane_bits`` (or readout bits), output
    buffer of every non-alias node (``tensor_types(g)[node].storage_bits``), each split into P
    banks. A bank of <= 1,024 bits is LUTRAM (``ceil(words / 64) × width`` LUTs); a RAM bank (state,
    buffer) of >= 147,456 bits goes to URAM when the part has it (``ceil(bits / 294,912)`` per bank);
    weight ROMs never do (UltraScale+ UltraRAM cannot be initialised by the bitstream); every other
    bank is BRAM in its cheapest aspect ratio (BRAM18 16K × 1 .. 512 × 36, BRAM36 32K × 1 ..
    512 × 72), halves rounded up per layer (``memory_blocks``). A consumer reading a producer's
    buffer with more lanes than the producer has banks is not modelled.
  * Control: ``LAYER_CONTROL_LUT = 150`` LUTs per layer (loop counters, address generation) and
    ``DESIGN_CONTROL_LUT = 1,500`` LUTs + ``DESIGN_CONTROL_FF = 2,500`` FFs per design (top FSM,
    step loop, AXI control and port adapters). ``FF = 1.5 × logic LUTs`` (LUTRAM excluded).
"""
from __future__ import annotations

from typing import Optional, Union

from step_deploy import ir

from .fit_report import estimate_json, fit_table
from .parallelism import auto_parallelism, parse_parallelism, resolve_parallelism
from .parts import FpgaPart, load_part
from .resource_model import (COMPUTE_OPS, DEFAULT_KEY, DESIGN_CONTROL_FF, DESIGN_CONTROL_LUT, ESTIMATE_LABEL,
                             FF_PER_LUT, LAYER_CONTROL_LUT, MODEL_RULES, PIPELINE_DEPTH, AUTO_KEY, DesignEstimate,
                             DesignModel, EstimateError, FitError, LayerEstimate, ParallelismError, check_clock,
                             fit_message)


def estimate(qgraph: ir.Graph, part: Union[FpgaPart, str], clock_mhz: float = 200.0, parallelism=None, *,
             steps: Optional[int] = None) -> DesignEstimate:
    """Estimate every compute node of ``qgraph`` (an ``'fpga-int'`` graph) on ``part`` (an
    ``FpgaPart``, a part name or a spec path). ``parallelism``: None (1 everywhere), an int (every
    compute node, capped per node at its parallel dimension) or ``{node: P}`` (others 1; key ``'*'``
    sets the default). ``steps`` defaults to the graph's ``time_steps``."""
    model = DesignModel(qgraph, load_part(part), steps)
    return model.design(check_clock(clock_mhz), model.resolve(parallelism))


__all__ = ["LayerEstimate", "DesignEstimate", "estimate", "auto_parallelism", "parse_parallelism",
           "resolve_parallelism", "fit_table", "estimate_json", "FitError", "ParallelismError", "EstimateError",
           "fit_message", "MODEL_RULES", "ESTIMATE_LABEL", "PIPELINE_DEPTH", "DESIGN_CONTROL_LUT",
           "DESIGN_CONTROL_FF", "LAYER_CONTROL_LUT", "FF_PER_LUT", "DEFAULT_KEY", "AUTO_KEY", "COMPUTE_OPS"]
