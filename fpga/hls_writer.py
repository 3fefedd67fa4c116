"""Write an ``'fpga-int'`` graph as a self-contained HLS C++ project (file contents only; the
target plug-in writes them atomically).

Layout of the project::

    firmware/stepd_top.cpp   the top function: T steps per call, all state local and reset first
    firmware/stepd_top.h     its declaration, sizes and I/O types
    firmware/defines.h       one typedef per tensor (spikes ap_uint<1>, ILIF's integer spikes
                             ap_uint<ceil(log2(D+1))>, counts just the bits they need)
    firmware/parameters.h    one config struct per kernel call (shapes, widths, parallelism)
    firmware/layers.h        the traced layers' names and sizes (C simulation only)
    firmware/weights/*.h     weights (int8), biases and per-channel shifts as const arrays
    firmware/kernels/*.h     the kernel templates, unchanged
    csim_bridge.cpp          extern "C" entry for the Python C-simulation wrapper (ctypes)
    tb/stepd_tb.cpp          testbench: reads tb_data/, prints mismatches per layer
    Makefile, build_prj.tcl  g++ C simulation; Vitis HLS csim / csynth / cosim / export

Schedule (stated, not DATAFLOW): time steps outermost; within a step the layers run one after
another in graph order; every layer's output-channel (or element) loop is unrolled by its
parallelism ``P`` with the arrays it reads partitioned cyclically ``P`` ways.

**Block-major schedule** (a graph holding a window op, ``TemporalBlockSum``: STAtten's sum over a
block of ``B`` steps is non-causal inside the block): blocks of ``B`` steps outermost (``B`` the
least common multiple of the window ops' blocks; T must be a multiple); within a block each layer
runs its ``B`` steps (in step order, so its state evolves exactly as step-major) before the next
layer starts; every buffer holds the ``B`` steps of a block (``B x`` the memory), and a window op
runs once per block on its producer's ``B``-step buffer. The first output of a block is ready only
after the block's last input step: a latency of ``B - 1`` steps. The golden model runs such a graph
node-major, which gives the same values. With no window op (``B = 1``) the top is the step-major
one, unchanged.
"""
from __future__ import annotations

import json
from importlib import resources
import math
from typing import Optional

import numpy as np

from step_deploy import ir
from step_deploy.fixedpoint import fpga as fx

from .hls_layers import HLS_BACKEND, KERNEL_OPS, Layer, build_layer
from .tensor_types import ALIAS_OPS, TensorType, UnsupportedForFpga, tensor_types

TOP = "stepd_top"
SPIKE_WORD = 32  # spikes packed this many per memory word (ARRAY_RESHAPE)
KERNEL_FILES = ("stepd_ap_int.h", "stepd_common.h", "stepd_synapse.h", "stepd_lif.h", "stepd_readout.h", "stepd_matmul.h",
                "stepd_elementwise.h", "stepd_reduce.h", "stepd_shiftmax.h", "stepd_window.h")


class HlsProject:
    """The layers of a quantized graph, in schedule order, and the files that implement them."""

    def __init__(self, qgraph: ir.Graph, parallelism: Optional[dict] = None, part: str = "xczu7ev-ffvc1156-2-e",
                 clock_mhz: float = 200.0, steps: Optional[int] = None):
        if qgraph.metadata.get(ir.FORMAT_KEY) != fx.FORMAT_NAME:
            raise UnsupportedForFpga(f"graph is not in the {fx.FORMAT_NAME!r} format "
                                     f"(got {qgraph.metadata.get(ir.FORMAT_KEY)!r}); run quantize-fpga first")
        try:
            ir.require_ops(qgraph, HLS_BACKEND)
        except ir.UnsupportedOpError as e:
            what = "; ".join(f"node {d.node!r}: {d.message}" for d in e.diagnostics)
            raise UnsupportedForFpga(f"{what} (it has kernels for: {', '.join(KERNEL_OPS)})") from None
        self.graph = qgraph
        self.steps = int(steps or qgraph.metadata.get("time_steps") or 0)
        if self.steps <= 0:
            raise UnsupportedForFpga("the graph does not say how many time steps it runs (metadata time_steps)")
        self.part, self.clock_mhz = part, float(clock_mhz)
        self.types = tensor_types(qgraph)
        self.parallelism = dict(parallelism or {})
        ins = [n for n in qgraph.nodes.values() if n.op == "Input"]
        if len(ins) != 1 or len(qgraph.outputs) != 1:
            raise UnsupportedForFpga("the FPGA back end handles one input and one output")
        self._alias: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.input_node = None  # the node whose output the top reads from its input port
        for n in qgraph.topo_order():
            if n.op == "Input":
                if n.kind != "analog":
                    self.input_node = n.name
                continue
            if isinstance(n, fx.FpgaQuantizeInput):
                self.input_node = n.name
                continue
            if n.op in ALIAS_OPS:
                self._alias[n.name] = self.source(n.inputs[0])
                continue
            if n.op == "Output":
                continue
            layer = build_layer(len(self.layers), n, self.types, self.source)
            self.layers.append(layer)
        if self.input_node is None:
            raise UnsupportedForFpga("the analog input has no FpgaQuantizeInput; run quantize-fpga first")
        self.by_name = {l.node.name: l for l in self.layers}
        self.block = math.lcm(*(l.window for l in self.layers)) if self.layers else 1
        if self.steps % self.block:
            w = next(l.node for l in self.layers if self.steps % l.window)
            raise UnsupportedForFpga(f"node {w.name!r} (TemporalBlockSum) sums blocks of {w.block} steps but the "
                                     f"design runs T={self.steps}: run a T that is a multiple of {self.block}")
        self.output_node = self.source(qgraph.outputs[0].inputs[0])
        unknown = sorted(set(self.parallelism) - set(self.by_name))
        if unknown:
            raise UnsupportedForFpga(f"parallelism names nodes that have no kernel: {', '.join(unknown)}")

    # ------------------------------------------------------------------ naming
    def source(self, name: str) -> str:
        """The node whose memory holds tensor ``name`` (aliases resolved)."""
        return self._alias.get(name, name)

    def buffer(self, name: str) -> str:
        src = self.source(name)
        return "xt" if src == self.input_node else f"b_{self.by_name[src].cname}"

    @property
    def input_type(self) -> TensorType:
        return self.types[self.input_node]

    @property
    def output_type(self) -> TensorType:
        return self.types[self.output_node]

    def at_step(self, name: str, s: str) -> str:
        """The memory of tensor ``name`` at step ``s`` (a C expression) of the current block."""
        src = self.source(name)
        if src == self.input_node:
            return f"x + (t0 + {s}) * STEPD_IN_SIZE"
        layer = self.by_name[src]
        return f"b_{layer.cname} + {s} * {layer.out.size}"

    def P(self, layer: Layer) -> int:
        return int(self.parallelism.get(layer.node.name, 1))

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> dict:
        """What the C-simulation wrapper needs: every traced layer's id, node, op, shape, size."""
        block = {"block": self.block} if self.block > 1 else {}
        return {
            "format": fx.FORMAT_NAME, "top": TOP, "steps": self.steps, **block, "part": self.part,
            "clock_mhz": self.clock_mhz,
            "input": {"node": self.input_node, "shape": list(self.input_type.shape), "ctype": self.input_type.ctype,
                      "lo": self.input_type.lo, "hi": self.input_type.hi},
            "output": {"node": self.output_node, "shape": list(self.output_type.shape),
                       "ctype": self.output_type.ctype},
            "layers": [{"id": l.id, "node": l.node.name, "op": l.node.op, "shape": list(l.out.shape),
                        "size": l.out.size, "ctype": l.out.ctype, "parallelism": self.P(l)} for l in self.layers],
        }

    # ------------------------------------------------------------------ files
    def files(self) -> dict[str, bytes]:
        out: dict[str, str] = {}
        kdir = resources.files("step_deploy.fpga") / "templates" / "kernels"
        for k in KERNEL_FILES:
            out[f"firmware/kernels/{k}"] = (kdir / k).read_text()
        out["firmware/defines.h"] = self._defines()
        out["firmware/parameters.h"] = self._parameters()
        out["firmware/layers.h"] = self._layers_h()
        for l in self.layers:
            if l.weights is not None:
                out[f"firmware/weights/{l.cname}.h"] = self._weights(l)
        out[f"firmware/{TOP}.h"] = self._top_h()
        out[f"firmware/{TOP}.cpp"] = self._top_cpp()
        tdir = resources.files("step_deploy.fpga") / "templates"
        out["csim_bridge.cpp"] = (tdir / "csim_bridge.cpp").read_text()
        out["tb/stepd_tb.cpp"] = (tdir / "stepd_tb.cpp").read_text()
        out["Makefile"] = (tdir / "Makefile").read_text()
        out["build_prj.tcl"] = (tdir / "build_prj.tcl").read_text().replace(
            "@PART@", self.part).replace("@PERIOD@", f"{1000.0 / self.clock_mhz:.3f}")
        out["project.json"] = json.dumps(self.manifest(), indent=1) + "\n"
        return {k: v.encode() for k, v in sorted(out.items())}

    def _defines(self) -> str:
        lines = ["// Generated by step-deploy: one integer type per tensor (spikes are 1 bit, integer spikes 0..D",
                 "// ceil(log2(D+1)) bits, counts carry just the bits their range needs, synapse outputs the",
                 "// consuming membrane's width).",
                 "#ifndef STEPD_DEFINES_H", "#define STEPD_DEFINES_H", "", '#include "stepd_ap_int.h"', "",
                 f"#define STEPD_T {self.steps}", f"#define STEPD_IN_SIZE {self.input_type.size}",
                 f"#define STEPD_OUT_SIZE {self.output_type.size}", f"#define STEPD_N_LAYERS {len(self.layers)}", "",
                 f"typedef {self.input_type.ctype} input_t;  // {self.input_node} {tuple(self.input_type.shape)}",
                 f"typedef {self.output_type.ctype} output_t;  // {self.output_node} {tuple(self.output_type.shape)}"]
        for l in self.layers:
            lines.append(f"typedef {l.out.ctype} {l.cname}_t;  // {l.node.name} ({l.node.op}) "
                         f"{tuple(l.out.shape)} in [{l.out.lo}, {l.out.hi}]")
        return "\n".join(lines + ["", "#endif", ""])

    def _parameters(self) -> str:
        lines = ["// Generated by step-deploy: one config struct per kernel call.", "#ifndef STEPD_PARAMETERS_H",
                 "#define STEPD_PARAMETERS_H", "", '#include "defines.h"']
        lines += [f'#include "{k}"' for k in KERNEL_FILES[2:]]
        lines += [f'#include "weights/{l.cname}.h"' for l in self.layers if l.weights is not None]
        for l in self.layers:
            lines += ["", f"// {l.node.name} ({l.node.op})", f"struct cfg_{l.cname} {{"]
            lines += [f"    {c}" for c in l.config]
            lines += [f"    static const int P = {self.P(l)};  // parallelism (unrolled lanes)", "};"]
        return "\n".join(lines + ["", "#endif", ""])

    def _layers_h(self) -> str:
        names = ",\n    ".join(json.dumps(l.node.name) for l in self.layers)
        sizes = ", ".join(str(l.out.size) for l in self.layers)
        return ("// Generated by step-deploy: the traced layers (C simulation and testbench only).\n"
                "#ifndef STEPD_LAYERS_H\n#define STEPD_LAYERS_H\n\n"
                f"static const char *const STEPD_LAYER_NAMES[STEPD_N_LAYERS] = {{\n    {names}}};\n"
                f"static const int STEPD_LAYER_SIZES[STEPD_N_LAYERS] = {{{sizes}}};\n\n#endif\n")

    @staticmethod
    def _array(decl: str, values: np.ndarray, per_line: int = 24) -> str:
        vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
        rows = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)] or ["0"]
        return f"{decl} = {{\n    " + ",\n    ".join(rows) + "};\n"

    def _weights(self, l: Layer) -> str:
        w, b, k = l.weights["w"], l.weights["bias"], l.weights["k"]
        n = l.node
        guard = f"STEPD_WEIGHTS_{l.cname.upper()}_H"
        head = (f"// {n.name} ({n.op}): weight {tuple(np.shape(n.weight))} as int8 in [{int(w.min())}, {int(w.max())}] "
                f"({int((w == 0).sum())} zeros, {n.weight_bits}-bit values), per-channel shifts k in "
                f"[{int(k.min())}, {int(k.max())}], bias {'none' if b is None else f'{b.size} values'}.\n"
                f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n")
        body = self._array(f"static const int8_t w_{l.cname}[{w.size}]", w)
        body += self._array(f"static const int64_t bias_{l.cname}[{1 if b is None else b.size}]",
                            np.zeros(1, np.int64) if b is None else b)
        body += self._array(f"static const int8_t k_{l.cname}[{k.size}]", k)
        return head + body + "\n#endif\n"

    def _top_h(self) -> str:
        stack = (sum(l.out.size for l in self.layers) * 16 * self.block
                 + sum(l.out.size for l in self.layers if l.state) * 16)
        stack = (stack + (64 << 20) + 4095) // 4096 * 4096
        return ("// Generated by step-deploy: the top function. One call runs one sample for STEPD_T steps.\n"
                "#ifndef STEPD_TOP_H\n#define STEPD_TOP_H\n\n#include \"defines.h\"\n\n"
                f"// stack the C simulation gives the top function (all buffers and state are its locals)\n"
                f"#define STEPD_STACK_BYTES {stack}LL\n\n"
                f"void {TOP}(const input_t x[STEPD_T * STEPD_IN_SIZE], output_t y[STEPD_OUT_SIZE]);\n\n#endif\n")

    def _top_cpp(self) -> str:
        if self.block > 1:
            return self._top_cpp_block_major()
        L = ["// Generated by step-deploy from an 'fpga-int' graph. Schedule: time steps outermost; within a",
             "// step the layers run one after another in graph order; each layer's loop is unrolled by its",
             "// parallelism P (config struct). All state (membranes, readout sums) and all buffers are locals",
             "// of this function, cleared by the RESET loops before step 0 of every sample: nothing is static,",
             "// so one sample can never leak into the next.",
             f'#include "{TOP}.h"', '#include "parameters.h"', "",
             f"void {TOP}(const input_t x[STEPD_T * STEPD_IN_SIZE], output_t y[STEPD_OUT_SIZE]) {{",
             "#pragma HLS INTERFACE mode=s_axilite port=return",
             "    // state, cleared at the start of every sample"]
        L += self._declarations("    // one buffer per tensor (spikes: 1 bit each, packed into words)", "")
        L.append("RESET:")
        L += [f"    {l.reset}" for l in self.layers if l.reset]
        L += ["STEPS:", "    for (int t = 0; t < STEPD_T; ++t) {", "        const input_t *xt = x + t * STEPD_IN_SIZE;"]
        for l in self.layers:
            ins = [self.buffer(i) for i in l.node.inputs]
            call = l.kernel.format(in0=ins[0], in1=ins[1] if len(ins) > 1 else "", out=f"b_{l.cname}")
            L.append(f"        {call}  // {l.node.name}")
            L.append(f"        STEPD_TRACE({l.id}, {l.out.size}, t, b_{l.cname});")
        L += ["    }", "OUTPUT:", "    for (int i = 0; i < STEPD_OUT_SIZE; ++i) {",
              f"        y[i] = {self.buffer(self.output_node)}[i];", "    }", "}", ""]
        return "\n".join(L)

    def _declarations(self, buffer_comment: str, steps: str) -> list[str]:
        """The top function's state, one buffer per tensor (``steps`` prefixes each buffer's size:
        ``""`` for one step, ``"STEPD_B * "`` for a block) and the partitioning pragmas."""
        L = []
        for l in self.layers:
            if l.state:
                L.append(f"    {l.state}  // {l.node.name}")
                arr = l.state.split()[-1].split("[")[0]
                if self.P(l) > 1:
                    L.append(f"#pragma HLS ARRAY_PARTITION variable={arr} cyclic factor={self.P(l)}")
        L.append(buffer_comment)
        for l in self.layers:
            L.append(f"    {l.cname}_t b_{l.cname}[{steps}{l.out.size}];  // {l.node.name}")
            if l.out.spike and l.out.size >= SPIKE_WORD:
                L.append(f"#pragma HLS ARRAY_RESHAPE variable=b_{l.cname} cyclic factor={SPIKE_WORD}")
            elif self.P(l) > 1:
                L.append(f"#pragma HLS ARRAY_PARTITION variable=b_{l.cname} cyclic factor={self.P(l)}")
        for l in self.layers:
            if l.weights is not None and self.P(l) > 1:
                L.append(f"#pragma HLS ARRAY_PARTITION variable=w_{l.cname} cyclic factor={self.P(l)}")
        return L

    def _top_cpp_block_major(self) -> str:
        B = self.block
        L = ["// Generated by step-deploy from an 'fpga-int' graph. Schedule: block-major (the graph holds a window",
             f"// op): blocks of STEPD_B = {B} steps outermost; within a block each layer runs its STEPD_B steps in",
             "// order before the next layer starts, every buffer holds the block's STEPD_B steps, a window op runs",
             "// once per block (latency STEPD_B - 1 steps). Each layer's loop is unrolled by its parallelism P.",
             "// All state and all buffers are locals of this function, cleared by the RESET loops before the",
             "// first block of every sample: nothing is static, so one sample can never leak into the next.",
             f'#include "{TOP}.h"', '#include "parameters.h"', "", f"#define STEPD_B {B}", "",
             f"void {TOP}(const input_t x[STEPD_T * STEPD_IN_SIZE], output_t y[STEPD_OUT_SIZE]) {{",
             "#pragma HLS INTERFACE mode=s_axilite port=return",
             "    // state, cleared at the start of every sample"]
        L += self._declarations("    // one buffer per tensor holding the STEPD_B steps of a block (spikes: 1 bit each, "
                                "packed)", "STEPD_B * ")
        L.append("RESET:")
        L += [f"    {l.reset}" for l in self.layers if l.reset]
        L += ["BLOCKS:", "    for (int t0 = 0; t0 < STEPD_T; t0 += STEPD_B) {"]
        for l in self.layers:
            size = l.out.size
            out = f"b_{l.cname} + s * {size}"
            ins = [self.at_step(i, "s") for i in l.node.inputs]
            call = l.kernel.format(in0=ins[0], in1=ins[1] if len(ins) > 1 else "", out=out)
            if l.window == 1:
                L += [f"        for (int s = 0; s < STEPD_B; ++s) {{  // {l.node.name} ({l.node.op})",
                      f"            {call}",
                      f"            STEPD_TRACE({l.id}, {size}, t0 + s, b_{l.cname} + s * {size});", "        }"]
            else:
                L += [f"        for (int s = 0; s < STEPD_B; s += {l.window}) {{  // {l.node.name} ({l.node.op}, "
                      f"window of {l.window} steps)", f"            {call}", "        }",
                      "        for (int s = 0; s < STEPD_B; ++s) {",
                      f"            STEPD_TRACE({l.id}, {size}, t0 + s, b_{l.cname} + s * {size});", "        }"]
        out = self.by_name[self.output_node]
        L += ["    }", "OUTPUT:", "    for (int i = 0; i < STEPD_OUT_SIZE; ++i) {",
              f"        y[i] = b_{out.cname}[(STEPD_B - 1) * {out.out.size} + i];", "    }", "}", ""]
        return "\n".join(L)


def write_project(qgraph: ir.Graph, **kw) -> tuple[HlsProject, dict[str, bytes]]:
    proj = HlsProject(qgraph, **kw)
    return proj, proj.files()


__all__ = ["HlsProject", "write_project", "TOP", "KERNEL_FILES", "UnsupportedForFpga"]
