"""Time, energy and memory traffic of the mesh simulator's events (every figure from the hardware file).

**Events** (per unit and hardware step; ``EVENT_COST`` names the hardware event that prices each):
``msgs_in`` (a spike message arriving at a core: ``axon_in``), ``synops_dense`` / ``synops_conv`` /
``synops_sparse`` (a synaptic operation of a Linear, a convolution, or a weight-1 one-to-one or
reduction synapse: ``synop_*``), ``neuron_updates`` (one compartment's state read, updated and
written: ``neuron_access`` + ``neuron_update``), ``spikes_out`` (a neuron emitting a non-zero value:
``spike_out``), ``msgs_out`` (a spike message sent to one destination core or to the embedded cores /
host: ``axon_out``), ``hops_east_west`` / ``hops_north_south`` (a packet crossing one tile:
``hop_*``, booked on the receiving core), ``embedded_ops`` (an AND-popcount accumulate of a product
of two live tensors on an embedded core: ``embedded_op``). ``synops`` is the sum of the three synop
kinds.

**Busy time** of a unit in a hardware step (SANA-FE-like: a core handles its messages in, synaptic
operations, neuron updates, spikes and messages out one after the other)::

    busy = msgs_in·t(axon_in) + Σ_kind synops_kind·t(synop_kind) + neuron_updates·(t(neuron_access) + t(neuron_update))
           + spikes_out·t(spike_out) + msgs_out·t(axon_out) + embedded_ops·t(embedded_op)

**Energy**: the same counts times the per-event energies, by component: ``synapses``, ``neurons``,
``spike_out``, ``axon_in``, ``axon_out``, ``noc`` (hops), ``embedded``. Host units cost nothing (no
figure for the host is published: the input quantization and the readout are not priced).

**Traffic** (bits): ``registers``: every compartment update reads and writes its state (``u`` and
``v``, 24 bits each: ``2 × 48`` bits, the energy counters' membrane bits); ``sram``: one weight
(``weight_bits``) per synaptic operation from the core's synapse memory plus the compartment state
read and written (Loihi keeps neuron state in the core's SRAM); ``dram``: 0 (a Loihi chip has no
off-chip memory in its time-step loop: weights and state stay in the cores)."""
from __future__ import annotations

from dataclasses import dataclass

from .hardware import MeshHardware

#: event name -> hardware events whose costs add up to one event of it
EVENT_COST = {
    "msgs_in": ("axon_in",), "synops_dense": ("synop_dense",), "synops_conv": ("synop_conv",),
    "synops_sparse": ("synop_sparse",), "neuron_updates": ("neuron_access", "neuron_update"),
    "spikes_out": ("spike_out",), "msgs_out": ("axon_out",), "hops_east_west": ("hop_east_west",),
    "hops_north_south": ("hop_north_south",), "embedded_ops": ("embedded_op",),
}
#: events that take a unit's time (hops are network time, see ``mesh``)
BUSY_EVENTS = ("msgs_in", "synops_dense", "synops_conv", "synops_sparse", "neuron_updates", "spikes_out",
               "msgs_out", "embedded_ops")
COMPONENT = {"msgs_in": "axon_in", "synops_dense": "synapses", "synops_conv": "synapses",
             "synops_sparse": "synapses", "neuron_updates": "neurons", "spikes_out": "spike_out",
             "msgs_out": "axon_out", "hops_east_west": "noc", "hops_north_south": "noc", "embedded_ops": "embedded"}
STATE_BITS = 48  # u and v, 24 bits each (lava-nc fixed_pt; energy.counters.LOIHI_STATE_BITS)


@dataclass(frozen=True)
class MeshCosts:
    """Latency (ns) and energy (pJ) of one event of every name in ``EVENT_COST``, and the barrier."""

    latency_ns: dict
    energy_pj: dict
    sync_ns: float

    @classmethod
    def from_hardware(cls, hw: MeshHardware, chips: int, embedded: bool) -> "MeshCosts":
        """Read every figure the run needs (``embedded``: the network has embedded-core products);
        a null or missing one raises ``HardwareError`` naming it."""
        lat, en = {}, {}
        for name, kinds in EVENT_COST.items():
            if name == "embedded_ops" and not embedded:
                lat[name] = en[name] = 0.0
                continue
            lat[name] = float(sum(hw.event(k).latency_ns for k in kinds))
            en[name] = float(sum(hw.event(k).energy_pj for k in kinds))
        return cls(lat, en, float(hw.sync_latency_ns(chips)))

    def busy_ns(self, counts: dict) -> float:
        """The busy-time formula of the module doc on counts ``{event name: number}``."""
        return float(sum(counts.get(k, 0) * self.latency_ns[k] for k in BUSY_EVENTS))

    def energy(self, counts: dict) -> dict:
        """``{component: pJ}`` of counts ``{event name: number}``."""
        out: dict = {}
        for k, v in counts.items():
            if k in COMPONENT:
                c = COMPONENT[k]
                out[c] = out.get(c, 0.0) + float(v) * self.energy_pj[k]
        return out


def traffic(counts: dict, weight_bits: int) -> dict:
    """``{level: bits}`` of counts ``{event name: number}`` (see the module doc)."""
    synops = sum(int(counts.get(k, 0)) for k in ("synops_dense", "synops_conv", "synops_sparse"))
    state = int(counts.get("neuron_updates", 0)) * 2 * STATE_BITS
    return {"registers": state, "sram": synops * int(weight_bits) + state, "dram": 0}


__all__ = ["BUSY_EVENTS", "COMPONENT", "EVENT_COST", "MeshCosts", "STATE_BITS", "traffic"]
