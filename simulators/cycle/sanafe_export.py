"""Export the neuro-core part of a mapped network in SANA-FE's input format, for a cross-check of
the mesh simulator against an independent simulator (SANA-FE, Boyle et al., PyPI ``sanafe``).

SANA-FE is GPL-3: this module only *writes text* (an architecture YAML, a network YAML, a
drive file and a runner script); it never imports ``sanafe``. :func:`run_sanafe` runs the
written runner in a separate Python process and reads back its JSON.

What is exported (SANA-FE 2.2.9 semantics, read in its source and checked by running it):

* **architecture** (:func:`arch_yaml`): the mesh of a :class:`~.hardware.MeshHardware`
  (``mesh_width`` x chips east-west by ``mesh_height`` tiles, ``cores_per_tile`` cores per tile)
  with our per-event costs: ``energy/latency_process_spike`` of the dense and conv synapse units =
  ``synop_dense``/``synop_conv``; soma ``access_neuron``/``update_neuron``/``spike_out`` =
  ``neuron_access``/``neuron_update``/``spike_out``; ``message_in`` = ``axon_in``; ``message_out``
  = ``axon_out``; hops = ``hop_east_west``/``hop_north_south``. The barrier is exported as SANA-FE's
  ``sync_model: fixed`` with our ``sync_latency_ns()``: SANA-FE's own table is keyed by the number
  of *mapped tiles* (largest key <= n), ours by chips (smallest key >= n), so the stock table would
  differ from ours for 2..28 tiles; fixing it compares the per-event models, not the barrier tables.
* **neurons**: SANA-FE's ``leaky_integrate_fire`` is Loihi's CUBA LIF in float64 with the
  membrane truncated to multiples of 1/64 after the leak. With one SANA-FE unit = 64 Loihi units
  (``v_sf = v / 64``), Loihi ``fixed_pt`` maps exactly: ``leak_decay = (4096 - dv) / 4096`` (the
  product and the 1/64 truncation toward zero are exact in float64 for |v| < 2^31), ``input_decay =
  0`` (``du = 4095``: ``u = a << 6`` each step), weights and biases in synaptic-input units
  (``mantissa * 2^weight_exp``), ``threshold = vth`` (compare ``>``; ``>=`` becomes ``vth - 1/64``),
  hard reset to 0, ``force_update: true`` (SANA-FE charges ``update_neuron`` only for a neuron
  with input, bias or non-zero potential; Loihi and our simulator update every compartment every
  step). Not modelled by SANA-FE: the 24-bit wrap/saturation of u and v, and a negative
  ``weight_exp`` (Loihi shifts the *sum*, SANA-FE adds scaled weights): :func:`network_from_qgraph`
  lists such layers in ``notes``.
* **timing**: a spike emitted in SANA-FE step k is integrated by its targets in step k+1, as on
  Loihi and in our mesh simulator (one synaptic delay per layer).
* **inputs**: spike inputs are SANA-FE ``input`` neurons (one ``input`` soma unit per input neuron
  of a core: SANA-FE stores a spike train per unit), placed on a core of our choice; a layer
  driven from outside the neuro-cores (the host's analog input, products on the embedded cores,
  or-pools) gets its synaptic input per step as the neurons' ``bias``, set by the runner before
  each step (``drives``)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from step_deploy.errors import StepDeployError
from step_deploy.simulators.cycle.hardware import MeshHardware, core_xy, load_hardware

SYNAPSE_UNITS = {"dense": "synapse_dense", "conv": "synapse_conv", "sparse": "synapse_sparse"}
RESULT_FILE = "sanafe_result.json"
#: compartments of one SANA-FE LIF / accumulator unit (its loihi_max_compartments)
COMPARTMENTS = 1024
TIMING_MODELS = ("simple", "detailed")


class SanafeExportError(StepDeployError, ValueError):
    """A network cannot be written in SANA-FE's format, or SANA-FE failed on it (the message says
    which group, core or file, and what to do)."""


@dataclass(frozen=True)
class SfGroup:
    """A group of LIF neurons (one mapped layer): ``cores[i]`` is neuron i's core index on our mesh;
    ``threshold`` in SANA-FE units (Loihi ``vth``), ``leak_decay`` = (4096 - dv) / 4096; ``bias``
    per neuron in synaptic-input units (None: 0); ``synapse`` the kind of its incoming synapses."""

    name: str
    cores: tuple
    threshold: float
    leak_decay: float
    compare: str = ">"
    bias: Optional[tuple] = None
    synapse: str = "dense"

    @property
    def neurons(self) -> int:
        return len(self.cores)


@dataclass(frozen=True)
class SfInput:
    """Input neurons replaying ``spikes`` (``(steps, n)`` 0/1, tuple of tuples), neuron i on ``cores[i]``."""

    name: str
    cores: tuple
    spikes: tuple

    @property
    def neurons(self) -> int:
        return len(self.cores)


@dataclass(frozen=True)
class SfEdges:
    """Synapses ``src[k] -> dst[k]`` (neuron indices in the groups) with integer weights in
    synaptic-input units."""

    src_group: str
    dst_group: str
    src: tuple
    dst: tuple
    weight: tuple


@dataclass
class SanafeNetwork:
    """What is exported: groups, inputs, synapses, per-step drives ``drives[group] = (steps, n)``
    int array (added as bias in each step), ``steps`` SANA-FE steps, and notes on what differs."""

    groups: list[SfGroup]
    edges: list[SfEdges]
    steps: int
    inputs: list[SfInput] = field(default_factory=list)
    drives: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cores_used(self) -> list[int]:
        used = set()
        for g in list(self.groups) + list(self.inputs):
            used.update(int(c) for c in g.cores)
        return sorted(used)


# ---------------------------------------------------------------- architecture


def _num(x: float) -> str:
    return f"{float(x):.6e}"


def arch_yaml(hw: Union[str, MeshHardware], *, input_units: int = 0, chips: Optional[int] = None,
              lif_units: int = 1) -> str:
    """SANA-FE architecture text for ``hw`` with our per-event costs (energies in J, latencies in s).
    ``input_units``: ``input`` soma units per core (the most input neurons one core holds);
    ``lif_units``: LIF soma + accumulator units per core (each holds ``COMPARTMENTS`` neurons)."""
    hw = load_hardware(hw)
    n_chips = int(chips) if chips is not None else hw.chips
    width, height, cpt = hw.mesh_width * n_chips, hw.mesh_height, hw.cores_per_tile
    ev = {k: hw.event(k) for k in ("synop_dense", "synop_sparse", "synop_conv", "neuron_access", "neuron_update",
                                   "spike_out", "axon_in", "axon_out", "hop_east_west", "hop_north_south")}
    e = {k: _num(v.energy_pj * 1e-12) for k, v in ev.items()}
    t = {k: _num(v.latency_ns * 1e-9) for k, v in ev.items()}
    lines = [
        f"# SANA-FE architecture written by step_deploy.simulators.cycle.sanafe_export from hardware {hw.name!r}",
        f"# ({hw.path}); per-event costs are ours, see that file for their sources.",
        "architecture:",
        f"  name: {hw.name.replace('-', '_')}_sanafe",
        "  attributes:",
        "    topology: mesh",
        f"    width: {width}",
        f"    height: {height}",
        "    link_buffer_size: 16",
        "    sync_model: fixed",
        f"    latency_sync: {_num(hw.sync_latency_ns(n_chips) * 1e-9)}",
        "  tile:",
        f"    - name: tile[0..{width * height - 1}]",
        "      attributes:",
        f"        energy_north_hop: {e['hop_north_south']}",
        f"        latency_north_hop: {t['hop_north_south']}",
        f"        energy_south_hop: {e['hop_north_south']}",
        f"        latency_south_hop: {t['hop_north_south']}",
        f"        energy_east_hop: {e['hop_east_west']}",
        f"        latency_east_hop: {t['hop_east_west']}",
        f"        energy_west_hop: {e['hop_east_west']}",
        f"        latency_west_hop: {t['hop_east_west']}",
        "      core:",
        f"        - name: core[0..{cpt - 1}]",
        "          attributes:",
        "            buffer_position: soma",
        "            buffer_inside_unit: false",
        "            max_neurons_supported: 65536",
        "          axon_in:",
        "            - name: axon_in",
        f"              attributes: {{energy_message_in: {e['axon_in']}, latency_message_in: {t['axon_in']}}}",
        "          soma:",
        f"            - name: lif[0..{int(lif_units) - 1}]",
        "              attributes:",
        "                model: leaky_integrate_fire",
        f"                energy_access_neuron: {e['neuron_access']}",
        f"                latency_access_neuron: {t['neuron_access']}",
        f"                energy_update_neuron: {e['neuron_update']}",
        f"                latency_update_neuron: {t['neuron_update']}",
        f"                energy_spike_out: {e['spike_out']}",
        f"                latency_spike_out: {t['spike_out']}",
    ]
    if input_units:
        lines += [
            f"            - name: input[0..{int(input_units) - 1}]",
            "              attributes: {model: input, energy_access_neuron: 0.0, latency_access_neuron: 0.0, "
            "energy_update_neuron: 0.0, latency_update_neuron: 0.0, energy_spike_out: 0.0, latency_spike_out: 0.0}",
        ]
    lines += [
        "          dendrite:",
        f"            - name: accumulator[0..{int(lif_units) - 1}]",
        "              attributes: {model: accumulator, energy_update: 0.0, latency_update: 0.0}",
        "          synapse:",
    ]
    for kind, unit in SYNAPSE_UNITS.items():
        lines.append(f"            - name: {unit}")
        lines.append(f"              attributes: {{model: current_based, energy_process_spike: {e['synop_' + kind]}, "
                     f"latency_process_spike: {t['synop_' + kind]}}}")
    lines += [
        "          axon_out:",
        "            - name: axon_out",
        f"              attributes: {{energy_message_out: {e['axon_out']}, latency_message_out: {t['axon_out']}}}",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- network


def sanafe_core(core: int, hw: MeshHardware) -> str:
    """SANA-FE's ``tile.core`` address of our core index. SANA-FE numbers tiles column-major
    (``x = id // height``, ``y = id % height``); our chips sit side by side east-west."""
    chip, x, y = core_xy(int(core), hw)
    tile = (chip * hw.mesh_width + x) * hw.mesh_height + y
    return f"{tile}.{int(core) % hw.cores_per_tile}"


def _runs(cores: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(first, last, core)`` runs of consecutive neurons on the same core."""
    out: list[list[int]] = []
    for i, c in enumerate(cores):
        if out and out[-1][2] == int(c) and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i, int(c)])
    return [tuple(r) for r in out]


def safe_name(name: str) -> str:
    """A group name SANA-FE accepts (it splits neuron addresses at '.'): other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _threshold(g: SfGroup) -> float:
    if g.compare == ">":
        return float(g.threshold)
    if g.compare == ">=":
        return float(g.threshold) - 1.0 / 64.0
    raise SanafeExportError(f"group {g.name!r}: compare {g.compare!r} is not '>' or '>='")


def network_yaml(net: SanafeNetwork, hw: Union[str, MeshHardware]) -> str:
    """SANA-FE network text: groups with LIF attributes, input neurons with their spike trains,
    one line per synapse, and the mapping of every neuron onto its core."""
    hw = load_hardware(hw)
    names = [g.name for g in net.groups] + [i.name for i in net.inputs]
    if len(set(names)) != len(names):
        raise SanafeExportError(f"group names must be unique, got {names}")
    bad = [n for n in names if safe_name(n) != n or not n]
    if bad:
        raise SanafeExportError(f"group name(s) {', '.join(map(repr, bad))}: SANA-FE splits addresses at '.'; "
                                "use letters, digits and '_' (safe_name() converts a name)")
    lines = ["network:", "  name: step_deploy_export", "  groups:"]
    for g in net.groups:
        if g.synapse not in SYNAPSE_UNITS:
            raise SanafeExportError(f"group {g.name!r}: synapse kind {g.synapse!r} is not one of {', '.join(SYNAPSE_UNITS)}")
        lines += [f"    - name: {g.name}",
                  f"      attributes: [threshold: {_threshold(g)!r}, reset: 0.0, reset_mode: hard, "
                  f"leak_decay: {float(g.leak_decay)!r}, input_decay: 0.0, force_update: true, "
                  f"synapse_hw_name: {SYNAPSE_UNITS[g.synapse]}, log_spikes: true]",
                  "      neurons:"]
        if g.bias is None or not np.any(np.asarray(g.bias)):
            lines.append(f"        - 0..{g.neurons - 1}: []")
        else:
            lines += [f"        - {i}: [bias: {float(b)!r}]" for i, b in enumerate(g.bias)]
    for inp in net.inputs:
        lines += [f"    - name: {inp.name}", "      attributes: [log_spikes: true]", "      neurons:"]
        trains = np.asarray(inp.spikes, dtype=np.int64).reshape(-1, inp.neurons)
        for i in range(inp.neurons):
            lines.append(f"        - {i}: [spikes: [{', '.join(str(int(s)) for s in trains[:, i])}]]")
    lines.append("  edges:" if any(len(e.src) for e in net.edges) else "  edges: []")
    for e in net.edges:
        for s, d, w in zip(e.src, e.dst, e.weight):
            lines.append(f"    - {e.src_group}.{int(s)} -> {e.dst_group}.{int(d)}: [weight: {float(w)!r}]")
    lines.append("mappings:")
    filled: dict[int, int] = {}
    for g in net.groups:
        units = []
        for c in g.cores:  # SANA-FE's LIF and dendrite units hold 1024 compartments each (Loihi's limit)
            k = filled.get(int(c), 0)
            filled[int(c)] = k + 1
            units.append(int(c) * 1_000_000 + k // COMPARTMENTS)
        for first, last, key in _runs(units):
            core, unit = divmod(key, 1_000_000)
            sel = f"{g.name}.{first}" if first == last else f"{g.name}.{first}..{last}"
            lines.append(f"  - {sel}: [core: {sanafe_core(core, hw)}, soma: \"lif[{unit}]\", "
                         f"dendrite: \"accumulator[{unit}]\"]")
    for inp in net.inputs:
        slot: dict[int, int] = {}
        for i, core in enumerate(inp.cores):
            k = slot.get(int(core), 0)
            slot[int(core)] = k + 1
            lines.append(f"  - {inp.name}.{i}: [core: {sanafe_core(core, hw)}, soma: \"input[{k}]\"]")
    lines.append("")
    return "\n".join(lines)


def lif_units(net: SanafeNetwork) -> int:
    """LIF units the busiest core needs (``COMPARTMENTS`` neurons each)."""
    counts: dict[int, int] = {}
    for g in net.groups:
        for c in g.cores:
            counts[int(c)] = counts.get(int(c), 0) + 1
    return max(1, max((math.ceil(v / COMPARTMENTS) for v in counts.values()), default=1))


def input_units(net: SanafeNetwork) -> int:
    """The most input neurons any one core holds (the ``input`` soma units each core needs)."""
    counts: dict[int, int] = {}
    for inp in net.inputs:
        for c in inp.cores:
            counts[int(c)] = counts.get(int(c), 0) + 1
    return max(counts.values(), default=0)


# The runner: executed by a separate Python process that has ``sanafe`` (GPL-3) installed; this
# package never imports it. argv: export dir, timing model, output JSON path.
RUNNER = '''"""Run a step-deploy SANA-FE export (written by step_deploy.simulators.cycle.sanafe_export)."""
import json
import sys

import numpy as np
import sanafe

out_dir, timing_model, result_path = sys.argv[1], sys.argv[2], sys.argv[3]
meta = json.load(open(out_dir + "/export.json"))
arch = sanafe.load_arch(out_dir + "/arch.yaml")
net = sanafe.load_net(out_dir + "/net.yaml", arch)
chip = sanafe.SpikingChip(arch)
chip.load(net)
drives = dict(np.load(out_dir + "/drives.npz")) if meta["drives"] else {}
groups = chip.mapped_neuron_groups
steps = []
for t in range(meta["steps"]):
    for name, cur in drives.items():
        row = cur[t]
        for i, neuron in enumerate(groups[name]):
            neuron.set_attributes(model_attributes={"bias": float(row[i]) + float(meta["bias"][name][i])})
    r = chip.sim(1, timing_model=timing_model, spike_trace=True, perf_trace=True)
    p = r["perf_trace"]
    spikes = {}
    for s in r["spike_trace"][0]:
        g, _, i = str(s).rpartition(".")
        spikes.setdefault(g, []).append(int(i))
    steps.append({"sim_time_s": float(p["sim_time"][0]), "energy_j": {k: float(p[k + "_energy"][0]) for k in
                  ("synapse", "dendrite", "soma", "network", "total")},
                  "spikes_processed": int(p["spikes"][0]), "neurons_updated": int(p["updated"][0]),
                  "neurons_fired": int(p["fired"][0]), "hops": int(p["hops"][0]),
                  "packets_sent": int(r.get("packets_sent", 0)),
                  "spikes": {g: sorted(v) for g, v in sorted(spikes.items())}})
json.dump({"sanafe_version": getattr(sanafe, "__version__", "unknown"), "timing_model": timing_model,
           "steps": steps}, open(result_path, "w"))
'''


def write_export(net: SanafeNetwork, hw: Union[str, MeshHardware], out_dir: Union[str, Path]) -> Path:
    """Write ``arch.yaml``, ``net.yaml``, ``drives.npz``, ``export.json`` and ``run_sanafe.py`` into
    ``out_dir`` (created); returns it."""
    hw = load_hardware(hw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_chips = max([core_xy(c, hw)[0] + 1 for c in net.cores_used()] + [hw.chips])
    (out / "arch.yaml").write_text(arch_yaml(hw, input_units=input_units(net), chips=n_chips,
                                                 lif_units=lif_units(net)))
    (out / "net.yaml").write_text(network_yaml(net, hw))
    by_name = {g.name: g for g in net.groups}
    bias = {}
    for name, cur in net.drives.items():
        if name not in by_name:
            raise SanafeExportError(f"drive for unknown group {name!r}; groups: {', '.join(by_name)}")
        cur = np.asarray(cur)
        if cur.shape != (net.steps, by_name[name].neurons):
            raise SanafeExportError(f"drive of group {name!r} has shape {cur.shape}, expected "
                                    f"(steps, neurons) = ({net.steps}, {by_name[name].neurons})")
        b = by_name[name].bias
        bias[name] = [float(x) for x in (b if b is not None else [0.0] * by_name[name].neurons)]
    np.savez(out / "drives.npz", **{k: np.asarray(v, dtype=np.float64) for k, v in net.drives.items()})
    (out / "export.json").write_text(json.dumps({"steps": net.steps, "drives": sorted(net.drives), "bias": bias,
                                                 "hardware": hw.name, "notes": net.notes}, indent=1))
    (out / "run_sanafe.py").write_text(RUNNER)
    return out


# ---------------------------------------------------------------- running (separate process)


def sanafe_available(python: Optional[str] = None) -> tuple[bool, str]:
    """Whether ``python`` (default: this interpreter) can import ``sanafe``; the reason when not."""
    exe = python or sys.executable
    try:
        p = subprocess.run([exe, "-c", "import sanafe, importlib.metadata as m; print(m.version('sanafe'))"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"cannot run {exe}: {e}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"sanafe cannot be imported by {exe} ({last}); install it with: pip install sanafe==2.2.9"
    return True, p.stdout.strip()


def run_sanafe(out_dir: Union[str, Path], timing_model: str = "simple", python: Optional[str] = None,
               timeout: float = 600.0) -> dict:
    """Run the export in ``out_dir`` with SANA-FE in a separate process; returns the runner's JSON:
    per step ``sim_time_s``, ``energy_j`` by component, event counts and spiking neurons per group."""
    if timing_model not in TIMING_MODELS:
        raise SanafeExportError(f"timing model {timing_model!r}: use one of {', '.join(TIMING_MODELS)}")
    out = Path(out_dir)
    result = out / f"{Path(RESULT_FILE).stem}_{timing_model}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        p = subprocess.run([python or sys.executable, str(out / "run_sanafe.py"), str(out), timing_model, str(result)],
                           capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise SanafeExportError(f"SANA-FE did not finish within {timeout:.0f} s on {out}; export fewer neurons "
                                "or raise the timeout") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise SanafeExportError(f"SANA-FE failed on {out} (exit {p.returncode}):\n{tail}")
    return json.loads(result.read_text())


def summarize(result: dict) -> dict:
    """Totals of a :func:`run_sanafe` result: ``energy_pj`` by component, ``latency_ns`` (sum of step
    times), ``step_ns`` per step and spike counts per group."""
    steps = result["steps"]
    energy = {k: 1e12 * sum(s["energy_j"][k] for s in steps) for k in ("synapse", "dendrite", "soma", "network", "total")}
    spikes: dict[str, int] = {}
    for s in steps:
        for g, idx in s["spikes"].items():
            spikes[g] = spikes.get(g, 0) + len(idx)
    return {"energy_pj": energy, "latency_ns": 1e9 * sum(s["sim_time_s"] for s in steps),
            "step_ns": [1e9 * s["sim_time_s"] for s in steps], "spikes": dict(sorted(spikes.items())),
            "hops": sum(s["hops"] for s in steps), "synops": sum(s["spikes_processed"] for s in steps),
            "packets": sum(s.get("packets_sent", 0) for s in steps),
            "neuron_updates": sum(s["neurons_updated"] for s in steps)}


def spike_raster(result: dict, group: str, neurons: int) -> np.ndarray:
    """``(steps, neurons)`` 0/1 spikes of ``group`` from a :func:`run_sanafe` result."""
    out = np.zeros((len(result["steps"]), neurons), dtype=np.int64)
    for t, s in enumerate(result["steps"]):
        out[t, s["spikes"].get(group, [])] = 1
    return out


def export_and_run(net: SanafeNetwork, hw: Union[str, MeshHardware], out_dir: Optional[Union[str, Path]] = None,
                   timing_models: Sequence[str] = ("simple",), python: Optional[str] = None) -> dict:
    """Write the export (into a temporary directory when ``out_dir`` is None) and run SANA-FE with each
    timing model; returns ``{timing_model: result}``."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="sanafe_") as tmp:
            return export_and_run(net, hw, tmp, timing_models, python)
    write_export(net, hw, out_dir)
    return {tm: run_sanafe(out_dir, tm, python) for tm in timing_models}


__all__ = ["COMPARTMENTS", "RESULT_FILE", "RUNNER", "SYNAPSE_UNITS", "TIMING_MODELS", "SanafeExportError", "SanafeNetwork",
           "SfEdges", "SfGroup", "SfInput", "arch_yaml", "export_and_run", "input_units", "lif_units", "network_yaml",
           "run_sanafe", "safe_name", "sanafe_available", "sanafe_core", "spike_raster", "summarize", "write_export"]
