"""Side-by-side numbers of the mesh simulator and SANA-FE on the neuro-core part of one network.

:func:`crosscheck` maps the float graph, builds the SANA-FE network (``sanafe_network``), runs our
``simulate_mesh`` and SANA-FE (a separate process, ``sanafe_export.run_sanafe``) on the same sample,
and returns per exported layer the spikes (golden, mesh, SANA-FE, with mismatch counts against the
golden model), the events, and totals of energy and latency with their relative difference.

SANA-FE reports energy and events for the whole chip; per layer its synaptic operations and
messages are *derived* from its spike trace and the exported synapses (each spike of neuron i:
one synop per synapse of i, one message per distinct destination core), and their totals are
checked against SANA-FE's own counts (``derived_check``). Two adjustments are stated separately,
never hidden in the raw numbers: ``relay`` (neurons SANA-FE needs to delay residual branches,
``sanafe_network.relay_overhead_pj``) and ``fill_drain`` (SANA-FE updates every compartment in
every step; the mesh simulator only in the T steps each layer works on a sample)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from step_deploy.simulators.cycle.hardware import MeshHardware, hops, load_hardware
from step_deploy.simulators.cycle.sanafe_export import export_and_run, spike_raster, summarize
from step_deploy.simulators.cycle.sanafe_network import RELAY, network_from_qgraph, relay_overhead_pj
from step_deploy.targets.mapping import map_to_cores

#: our energy components -> SANA-FE's component they fall in
COMPONENTS = {"synapses": "synapse", "neurons": "soma", "spike_out": "soma", "axon_in": "network",
              "axon_out": "network", "noc": "network"}


def _rel(ours: float, theirs: float) -> Optional[float]:
    """(SANA-FE - ours) / ours; None when ours is 0 and theirs too."""
    if ours == 0:
        return None if theirs == 0 else float("inf")
    return (theirs - ours) / ours


def _derived_events(net, result: dict, hw: MeshHardware) -> dict:
    """Per SANA-FE group: synops and messages *into* it and the hops of those messages, and its
    messages *out* to groups that are not relays, from the trace (one message per destination core)."""
    by_name = {g.name: g for g in net.groups}
    fan: dict[str, dict[int, dict[str, list]]] = {}
    for e in net.edges:
        f = fan.setdefault(e.src_group, {})
        dst_cores = by_name[e.dst_group].cores
        for s, d in zip(e.src, e.dst):
            f.setdefault(int(s), {}).setdefault(e.dst_group, []).append(int(dst_cores[int(d)]))
    out = {g.name: {"synops": 0, "msgs_in": 0, "msgs_out": 0, "hops": 0} for g in net.groups}
    src_cores = {g.name: g.cores for g in net.groups}
    for s in result["steps"]:
        for group, idx in s["spikes"].items():
            for i in idx:
                per_dst = fan.get(group, {}).get(int(i), {})
                cores_hit: dict[int, str] = {}
                for dst, cores in per_dst.items():
                    out[dst]["synops"] += len(cores)
                    for c in cores:
                        cores_hit.setdefault(c, dst)
                out[group]["msgs_out"] += sum(1 for dst in cores_hit.values() if RELAY not in dst)
                for c, dst in cores_hit.items():  # one message per destination core
                    out[dst]["msgs_in"] += 1
                    out[dst]["hops"] += hops(int(src_cores[group][int(i)]), c, hw).total
    return out


def sanafe_simple_formula_ns(sim, hw: MeshHardware) -> list[float]:
    """Per hardware step (one sample): SANA-FE's ``simple`` timing model applied
    to the mesh simulator's own events: ``max over cores of max(neuron processing, message
    processing) + barrier`` with neuron processing = updates·(t_access + t_update) + spikes·t_spike_out
    + msgs_out·t_axon_out and message processing = msgs_in·t_axon_in + Σ synops·t_synop (no hop
    latency). It separates the timing *model* from the event *counts*."""
    t = {k: hw.event(k).latency_ns for k in ("neuron_access", "neuron_update", "spike_out", "axon_out", "axon_in",
                                             "synop_dense", "synop_conv", "synop_sparse")}
    cores = np.array([u.kind == "core" for u in sim.units])
    ev = {k: np.asarray(v, dtype=np.float64)[cores] for k, v in sim.events.items()}
    zero = np.zeros_like(ev["neuron_updates"])
    gen = (ev["neuron_updates"] * (t["neuron_access"] + t["neuron_update"]) + ev["spikes_out"] * t["spike_out"]
           + ev["msgs_out"] * t["axon_out"])
    proc = ev["msgs_in"] * t["axon_in"] + sum(ev.get(f"synops_{k}", zero) * t[f"synop_{k}"]
                                             for k in ("dense", "conv", "sparse"))
    barrier = hw.sync_latency_ns(int(sim.hardware.get("chips", 1)) if isinstance(sim.hardware, dict) else 1)
    return [float(x) + barrier for x in np.maximum(gen, proc).max(axis=0)]


def crosscheck(qgraph, graph, inputs, steps: int, hardware: Union[str, MeshHardware] = "loihi1",
               timing_models: Sequence[str] = ("simple", "detailed"), out_dir=None,
               python: Optional[str] = None) -> dict:
    """Run both simulators on ONE sample (``inputs`` with batch 1) and return the comparison
    (JSON-ready; see the module doc)."""
    from step_deploy.simulators.cycle.mesh import simulate_mesh  # the simulator under test

    hw = load_hardware(hardware)
    mapping = map_to_cores(graph, hw.name.removesuffix("-assumed"))
    net, info = network_from_qgraph(qgraph, mapping, inputs, steps)
    sim = simulate_mesh(qgraph, graph, inputs, steps=steps, hardware=hw)
    runs = export_and_run(net, hw, out_dir, timing_models, python)
    first = runs[timing_models[0]]
    gold = info["golden"]
    derived = _derived_events(net, first, hw)
    T = int(steps)
    upd_pj = hw.event("neuron_access").energy_pj + hw.event("neuron_update").energy_pj

    layers = {}
    for node, gi in info["groups"].items():
        n, lat, group = gi["neurons"], gi["latency"], gi["group"]
        ref = gold.traces[node][:, 0].reshape(T, n).numpy()
        mesh = sim.spikes[node][:, 0].reshape(T, n).numpy()
        raster = spike_raster(first, group, n)
        window = raster[lat:lat + T]
        ev = sim.layers[mapping.layer(node).name]["events"]
        layers[node] = {
            "neurons": n, "driven": gi["driven"], "sources": gi["sources"],
            "spikes": {"golden": int(ref.sum()), "mesh": int(mesh.sum()), "sanafe": int(window.sum())},
            "mismatches": {"mesh_vs_golden": int((mesh != ref).sum()), "sanafe_vs_golden": int((window != ref).sum()),
                           "values": int(ref.size), "sanafe_outside_window": int(raster.sum() - window.sum())},
            "neuron_updates": {"mesh": int(ev["neuron_updates"]), "sanafe": n * net.steps},
            "synops_in": {"mesh": int(ev["synops"]), "sanafe": derived[group]["synops"]},
            "msgs_in": {"mesh": int(ev["msgs_in"]), "sanafe": derived[group]["msgs_in"]},
            "msgs_out": {"mesh": int(ev["msgs_out"]), "sanafe": derived[group]["msgs_out"]
                         + sum(derived[r]["msgs_out"] for r, (_, origin) in info["relays"].items() if origin == group)},
        }
    exported = {mapping.layer(node).name for node in info["groups"]}
    ours: dict[str, float] = {}
    for name in exported:
        for comp, pj in sim.layers[name]["energy_pj"].items():
            ours[comp] = ours.get(comp, 0.0) + float(pj)
    ours_by = {"synapse": 0.0, "soma": 0.0, "network": 0.0}
    for comp, pj in ours.items():
        if comp in COMPONENTS:
            ours_by[COMPONENTS[comp]] += pj
    ours_by["total"] = sum(ours_by.values())

    # the boundary: what reaches a driven layer from outside the export (SANA-FE gets it as a bias)
    boundary = {"synapse": 0.0, "soma": 0.0, "network": 0.0}
    for node, gi in info["groups"].items():
        if gi["driven"]:
            en = sim.layers[mapping.layer(node).name]["energy_pj"]
            boundary["synapse"] += float(en.get("synapses", 0.0))
            boundary["network"] += float(en.get("axon_in", 0.0)) + float(en.get("noc", 0.0))
    boundary["total"] = sum(boundary.values())
    comparable = {k: ours_by[k] - boundary[k] for k in ours_by}
    relay = relay_overhead_pj(net, first, info["relays"], hw)
    fill = sum(g["neurons"] for g in info["groups"].values()) * (net.steps - T) * upd_pj
    totals = {}
    for tm, res in runs.items():
        sm = summarize(res)
        raw = {k: sm["energy_pj"][k] for k in ("synapse", "soma", "network", "total")}
        adj = {"synapse": raw["synapse"] - relay["synapses"],
               "soma": raw["soma"] - relay["neurons"] - relay["spike_out"] - fill,
               "network": raw["network"] - relay["messages"] - relay["noc"]}
        adj["total"] = sum(adj.values())
        totals[tm] = {"energy_pj_raw": raw, "energy_pj_adjusted": adj, "latency_ns": sm["latency_ns"],
                      "step_ns": sm["step_ns"], "sf_steps": len(res["steps"]),
                      "counts": {k: sm[k] for k in ("synops", "packets", "hops", "neuron_updates")}}
    # the network difference, message by message: messages out of the exported layers on each side
    out_mesh = sum(r["msgs_out"]["mesh"] for r in layers.values())
    out_sf = sum(r["msgs_out"]["sanafe"] for r in layers.values())
    d_net = totals[timing_models[0]]["energy_pj_adjusted"]["network"] - comparable["network"]
    msg_pj = (out_sf - out_mesh) * (hw.event("axon_out").energy_pj + hw.event("axon_in").energy_pj)
    network_explained = {"msgs_out_mesh": out_mesh, "msgs_out_sanafe": out_sf, "difference_pj": d_net,
                         "from_message_count_pj": msg_pj, "rest_pj (hops)": d_net - msg_pj}
    d_syn = sum(v["synops"] for v in derived.values())
    d_msg = sum(v["msgs_in"] for v in derived.values())
    d_hops = sum(v["hops"] for v in derived.values())
    sm0 = totals[timing_models[0]]["counts"]
    mesh_latency = float(sim.mean_latency_ns)
    mesh_core_steps = sim.step_ns[0]
    sf_formula = sanafe_simple_formula_ns(sim, hw)
    return {
        "hardware": hw.name, "steps": T, "sf_steps": net.steps, "mesh_hw_steps": int(sim.hw_steps),
        "layers": layers,
        "energy_pj": {"mesh_exported_layers": ours_by, "mesh_whole_network": float(sim.total_energy_pj),
                      "mesh_boundary_inputs": boundary, "mesh_comparable": comparable,
                      "sanafe": {tm: v["energy_pj_raw"] for tm, v in totals.items()},
                      "sanafe_adjusted": totals[timing_models[0]]["energy_pj_adjusted"],
                      "adjustments": {"relay": relay, "fill_drain_updates": fill},
                      "network_explained": network_explained,
                      "rel_diff_adjusted": {k: _rel(comparable[k], totals[timing_models[0]]["energy_pj_adjusted"][k])
                                            for k in comparable}},
        "latency_ns": {"mesh": mesh_latency, "mesh_step_ns": [float(x) for x in mesh_core_steps],
                       "mesh_events_sanafe_simple_formula": float(sum(sf_formula)),
                       "mesh_events_sanafe_simple_formula_step_ns": sf_formula,
                       **{f"sanafe_{tm}": v["latency_ns"] for tm, v in totals.items()},
                       **{f"sanafe_{tm}_step_ns": v["step_ns"] for tm, v in totals.items()},
                       "rel_diff": {tm: _rel(mesh_latency, v["latency_ns"]) for tm, v in totals.items()}},
        "derived_check": {"synops": [d_syn, sm0["synops"]], "messages": [d_msg, sm0["packets"]],
                          "hops": [d_hops, sm0["hops"]], "neuron_updates": [sum(g.neurons for g in net.groups)
                                                                             * net.steps, sm0["neuron_updates"]]},
        "relay_groups": sorted(info["relays"]), "not_exported": info["not_exported"], "notes": net.notes,
    }


def table(report: dict) -> str:
    """The comparison as Markdown tables (per layer; energy by component; latency)."""
    def pct(x):
        return "n/a" if x is None else ("inf" if x == float("inf") else f"{100 * x:+.1f}%")

    lines = [f"SANA-FE cross-check on {report['hardware']}: T = {report['steps']} golden steps, SANA-FE ran "
             f"{report['sf_steps']} steps, the mesh {report['mesh_hw_steps']} hardware steps", "",
             "| layer | neurons | driven | spikes golden / mesh / SANA-FE | mismatches mesh / SANA-FE (of) | "
             "updates mesh / SANA-FE | synops in mesh / SANA-FE | msgs in mesh / SANA-FE | msgs out mesh / SANA-FE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["layers"].items():
        s, m = r["spikes"], r["mismatches"]
        lines.append(f"| {name} | {r['neurons']} | {'yes' if r['driven'] else 'no'} | {s['golden']} / {s['mesh']} / "
                     f"{s['sanafe']} | {m['mesh_vs_golden']} / {m['sanafe_vs_golden']} ({m['values']}) | "
                     f"{r['neuron_updates']['mesh']} / {r['neuron_updates']['sanafe']} | "
                     f"{r['synops_in']['mesh']} / {r['synops_in']['sanafe']} | "
                     f"{r['msgs_in']['mesh']} / {r['msgs_in']['sanafe']} | "
                     f"{r['msgs_out']['mesh']} / {r['msgs_out']['sanafe']} |")
    e = report["energy_pj"]
    tms = list(e["sanafe"])
    lines += ["", "| energy (pJ, one sample) | mesh (exported layers) | mesh without boundary inputs | "
              + " | ".join(f"SANA-FE {t} raw" for t in tms)
              + " | SANA-FE adjusted | adjusted vs mesh without boundary |", "|---|---|---|" + "---|" * (len(tms) + 2)]
    for k in ("synapse", "soma", "network", "total"):
        lines.append(f"| {k} | {e['mesh_exported_layers'][k]:.1f} | {e['mesh_comparable'][k]:.1f} | "
                     + " | ".join(f"{e['sanafe'][t][k]:.1f}" for t in tms)
                     + f" | {e['sanafe_adjusted'][k]:.1f} | {pct(e['rel_diff_adjusted'][k])} |")
    a = e["adjustments"]
    lines += ["", f"Adjustments subtracted from SANA-FE: relay neurons {a['relay']['total']:.1f} pJ, "
              f"fill/drain compartment updates {a['fill_drain_updates']:.1f} pJ. Whole network on the mesh "
              f"(adders, or-pools, accumulators and embedded products included): {e['mesh_whole_network']:.1f} pJ.",
              "", "Network difference: messages out of the exported layers mesh {msgs_out_mesh} / SANA-FE "
              "{msgs_out_sanafe}: {from_message_count_pj:.1f} pJ of the {difference_pj:.1f} pJ; the rest "
              "({rest:.1f} pJ) is hops.".format(rest=e["network_explained"]["rest_pj (hops)"], **e["network_explained"]),
              "", "| latency (ns, one sample) | value | vs mesh |", "|---|---|---|",
              f"| mesh ({report['mesh_hw_steps']} hw steps) | {report['latency_ns']['mesh']:.1f} | |",
              f"| mesh events, SANA-FE simple formula ({report['mesh_hw_steps']} hw steps) | "
              f"{report['latency_ns']['mesh_events_sanafe_simple_formula']:.1f} | "
              f"{pct(_rel(report['latency_ns']['mesh'], report['latency_ns']['mesh_events_sanafe_simple_formula']))} |"]
    for t in tms:
        lines.append(f"| SANA-FE {t} ({report['sf_steps']} steps) | {report['latency_ns'][f'sanafe_{t}']:.1f} | "
                     f"{pct(report['latency_ns']['rel_diff'][t])} |")
    c = report["derived_check"]
    lines += ["", "Derived per-layer SANA-FE counts vs SANA-FE's own totals: "
              + ", ".join(f"{k} {v[0]} / {v[1]}" for k, v in c.items())]
    return "\n".join(lines)


__all__ = ["COMPONENTS", "crosscheck", "sanafe_simple_formula_ns", "table"]
