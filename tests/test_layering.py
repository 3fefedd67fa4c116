"""Imports go one way. Every module's imports (module level and inside functions) are read with
``ast`` and checked against the layer order below; there are no import cycles between modules and
no comment says that an import has to come before another.

Layers, lowest first (a module may import its own layer and the layers below it, never a layer
beside or above it):

0. ``errors``: the base of every user-facing error type
1. ``ir``, ``atomic``: the graph IR (it imports nothing else of the project) and atomic output
2. ``fixedpoint`` (fixed-point formats: node types + constants), ``models`` (the PyTorch
   reference), ``data``
3. ``frontend`` (capture), ``targets`` (hardware specs as data, core mapping, constraint rules)
4. ``energy``: counting (from traces of any source) and pricing (the Loihi model prices the core mapping)
5. ``simulators``: the executable semantics (float reference interpreter, integer golden model
   and the op functions of each fixed-point format)
6. ``passes``: graph rewrites and analyses (calibration runs the reference interpreter)
7. ``exporters`` (each backend: writer, kernels and the runner of what it wrote) and ``fpga``
8. ``simulators.cycle``: the cycle-level simulator (it runs the quantized network the passes made,
   on the core mapping and on the FPGA design ``fpga`` generates, with the energy tables)
9. orchestration: ``export`` (targets as plug-ins), ``cli``, ``evaluation``, ``energy_eval``
   (energy over data sets, step-energy), ``sim_eval`` (step-sim), ``parity`` (step-parity), ``training``, ``qat`` (on-grid fine-tuning), ``opmatrix``, ``neuron_support`` and the package root
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"step_deploy": ROOT / "step_deploy", "step_deploy.exporters": ROOT / "exporters",
            "step_deploy.simulators": ROOT / "simulators", "step_deploy.fpga": ROOT / "fpga"}
LAYERS = [
    {"errors"},
    {"ir", "atomic"},
    {"fixedpoint", "models", "data"},
    {"frontend", "targets"},
    {"energy"},
    {"simulators"},
    {"passes"},
    {"exporters", "fpga"},
    {"cycle"},
    {"export", "cli", "evaluation", "energy_eval", "sim_eval", "parity", "training", "train_loop", "qat", "opmatrix", "neuron_support", ""},
]
RANK = {name: r for r, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for pkg, d in PACKAGES.items():
        for f in sorted(d.rglob("*.py")):
            parts = list(f.relative_to(d).with_suffix("").parts)
            if pkg == "step_deploy" and parts[0] in ("exporters", "simulators", "fpga"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg] + parts)] = f
    return out


MODULES = modules()


def imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports anywhere in its source (``from pkg import mod`` counts as
    importing ``pkg.mod``; a package's own ``__init__`` run by Python on the way is not counted)."""
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base
                for _ in range(node.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                mod = f"{pkg}.{node.module}" if node.module else pkg
            else:
                mod = node.module
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            out.update(subs if subs and len(subs) == len(node.names) else [mod] + subs)
    return {m for m in out if m.startswith("step_deploy") and m != name and m != "step_deploy"}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[1:3] == ["simulators", "cycle"]:
        return "cycle"
    return parts[1] if len(parts) > 1 else ""


GRAPH = {m: imports(m, p) for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert not sorted({layer(m) for m in MODULES} - set(RANK)), "add the new package to LAYERS"


def _violations() -> list[str]:
    bad = []
    for m, targets in sorted(GRAPH.items()):
        for t in sorted(targets):
            a, b = layer(m), layer(t)
            if a != b and RANK[b] >= RANK[a] and RANK[a] != RANK[""]:
                bad.append(f"{m} -> {t}  ({a or 'root'}, layer {RANK[a]} -> {b or 'root'}, layer {RANK[b]})")
    return bad


def test_imports_go_down_the_layers():
    bad = _violations()
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_ir_imports_nothing_else_of_the_project():
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if layer(m) == "ir" for t in ts if layer(t) != "ir"]
    assert not bad, bad


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


#: cycles that exist today in code outside the layering work, each with what breaks it; an entry
#: that no longer matches a cycle fails the test, so the list can only shrink
KNOWN_CYCLES: dict = {}


def test_no_import_cycles():
    found = {tuple(c) for c in _cycles()}
    assert found - set(KNOWN_CYCLES) == set(), "new import cycles"
    assert set(KNOWN_CYCLES) - found == set(), "fixed: remove these from KNOWN_CYCLES"


def test_the_checks_can_fail():
    GRAPH["step_deploy.ir.diagnostics"].add("step_deploy.passes.registry")
    try:
        assert any("step_deploy.ir.diagnostics" in c and "step_deploy.passes.registry" in c for c in _cycles())
    finally:
        GRAPH["step_deploy.ir.diagnostics"].discard("step_deploy.passes.registry")
    GRAPH["step_deploy.simulators.golden"].add("step_deploy.exporters.lava_runner")
    try:
        assert _violations() == ["step_deploy.simulators.golden -> step_deploy.exporters.lava_runner  "
                                 "(simulators, layer 5 -> exporters, layer 7)"]
    finally:
        GRAPH["step_deploy.simulators.golden"].discard("step_deploy.exporters.lava_runner")
    assert "step_deploy.simulators.reference" in GRAPH["step_deploy.simulators.golden"]
    assert "step_deploy.simulators.golden" in GRAPH["step_deploy.passes.quantize_loihi"]  # imported inside a function
    assert "step_deploy.exporters.lava_compat" in GRAPH["step_deploy.exporters.lava_export"]  # relative import


ORDER_COMMENT = re.compile(r"#.*\b(import order|order matters|must be imported (before|after|first)|"
                           r"(before|after) (importing|reference_ops|ir\.fixed_point)|imports? .* first\))", re.I)


def test_no_comment_says_import_order_matters():
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in MODULES.values()
           for i, line in enumerate(p.read_text().splitlines(), 1) if ORDER_COMMENT.search(line)]
    assert not bad, bad
