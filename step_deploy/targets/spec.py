"""Hardware target specs as data: every limit with its value, unit, source and confidence.

A spec file (YAML or JSON) has ``name``, ``description``, ``kind`` (the device kind, which picks
the schema: ``neuromorphic`` for chips such as Loihi, ``fpga`` for FPGA parts; a file without
``kind`` is ``neuromorphic``), optional ``extends`` (the name or path of a base spec whose limits
it overrides; the kind is the base's) and ``limits``: a mapping from key to an entry
``{value, unit, source, confidence[, note]}``. In a file that ``extends`` a base, a bare value
(``neurons_per_core: 256``) overrides only the value; unit comes from the base and the source
names the user file. Confidence is one of ``primary`` (read in the vendor's paper/brief or in
tool source code), ``secondary`` (quoted by third parties) or ``to-verify`` (an assumption).

``SCHEMAS[kind]`` says which keys a spec of that kind must have and what type each value has
(``SCHEMA`` is the neuromorphic one); loading checks every entry and reports all problems at once,
naming the key and the file."""
from __future__ import annotations

from step_deploy.errors import StepDeployError

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

CONFIDENCES = ("primary", "secondary", "to-verify")


def check_provenance(label: str, raw: dict, problems: list[str]) -> None:
    """Every number in a hardware file says where it comes from: ``raw['confidence']`` is one of
    :data:`CONFIDENCES` and ``raw['source']`` a non-empty string; what is wrong goes to ``problems``."""
    if raw["confidence"] not in CONFIDENCES:
        problems.append(f"{label}: confidence {raw['confidence']!r} is not one of {', '.join(CONFIDENCES)}")
    if not isinstance(raw["source"], str) or not raw["source"].strip():
        problems.append(f"{label}: 'source' must be a non-empty string: every number needs one")
SPEC_DIR = Path(__file__).resolve().parent
BUILTIN = ("loihi2", "loihi1", "zcu102", "zcu104", "vcu118", "pynq-z2")
KINDS = ("neuromorphic", "fpga")

_INT, _BOOL, _STR = "int", "bool", "str"
_OPT_INT, _INT_LIST, _OPT_INT_LIST = "int|null", "list[int]", "list[int]|null"

#: key -> (value type, what it is). Every key is required in a spec without ``extends``.
SCHEMA: dict[str, tuple[str, str]] = {
    "neuro_cores_per_chip": (_INT, "neuro-cores (neuromorphic cores) per chip"),
    "embedded_cores_per_chip": (_INT, "embedded x86 cores per chip"),
    "embedded_cores_usable": (_INT, "embedded cores the toolchain actually uses"),
    "neurons_per_core": (_INT, "neurons (compartments) per neuro-core"),
    "in_axons_per_core": (_OPT_INT, "distinct presynaptic sources (input axons) per core; null = unknown"),
    "out_axons_per_core": (_OPT_INT, "output axons (neuron -> destination core routes) per core; null = unknown"),
    "core_memory_bits": (_INT, "per-core memory the memory model charges (synapses, plus neuron state if neuron_state_bits > 0)"),
    "neuron_state_bits": (_INT, "bits of core_memory_bits one neuron uses (0: neuron state lives elsewhere)"),
    "neurons_per_chip": (_INT, "neurons per chip"),
    "synapses_per_chip": (_INT, "synapses per chip"),
    "weight_bits": (_INT, "largest weight mantissa width"),
    "weight_bits_allowed": (_INT_LIST, "weight mantissa widths the synapse format supports"),
    "weight_exponent_range": (_OPT_INT_LIST, "[min, max] of the shared weight exponent"),
    "mixed_sign_loses_lsb": (_BOOL, "mixed-sign weights lose one mantissa LSB"),
    "weight_sharing": (_BOOL, "conv kernels / per-token Linear weights stored once per core (memory model)"),
    "unshared_synapse_encoding": (_STR, "'dense' (weight bits only) or 'indexed' (weight + index bits) per stored synapse"),
    "shared_synapse_encoding": (_STR, "encoding of shared (population) synapse entries"),
    "index_bits_map": (_OPT_INT_LIST, "allowed index widths (null: ceil(log2(neurons on core)))"),
    "synapse_block_size": (_OPT_INT, "synapses per synapse-list block (null: one block per list)"),
    "synapse_block_overhead_bits": (_INT, "header bits per block"),
    "synapse_word_bits": (_INT, "memory word a block is rounded up to"),
    "graded_spikes": (_BOOL, "spikes can carry an integer payload"),
    "spike_payload_bits": (_INT, "bits a spike carries (1 = binary only)"),
    "state_bits": (_INT, "width of the neuron current u and voltage v"),
    "decay_bits": (_INT, "width of the current and voltage decay constants"),
    "vth_mantissa_bits": (_INT, "threshold mantissa width"),
    "vth_shift": (_INT, "threshold mantissa left shift"),
    "bias_mantissa_bits": (_INT, "bias mantissa width (signed)"),
    "bias_exponent_bits": (_INT, "bias exponent width"),
    "max_synaptic_delay": (_OPT_INT, "largest synaptic delay in steps (null = unknown)"),
    "programmable_neurons": (_BOOL, "neuron models are programmable (custom neuron microcode)"),
    "builtin_compare": (_STR, "how the built-in neuron compares v with the threshold ('>' or '>=')"),
    "builtin_reset": (_STR, "the built-in neuron's reset ('zero' = hard reset to 0)"),
}
#: FPGA parts: the resources a generated design is sized against (counts of the whole device).
FPGA_SCHEMA: dict[str, tuple[str, str]] = {
    "board": (_STR, "evaluation board"),
    "part": (_STR, "FPGA device on the board"),
    "hls_part": (_STR, "full part string (device-package-speed grade) Vitis HLS and Vivado take"),
    "family": (_STR, "device family"),
    "dsp_slices": (_INT, "DSP slices (DSP48E1/DSP48E2): multipliers for MACs"),
    "bram36_blocks": (_INT, "36 Kb block RAMs (weights, membrane state)"),
    "uram_blocks": (_INT, "288 Kb UltraRAM blocks (0: the device has none)"),
    "luts": (_INT, "6-input look-up tables (CLB LUTs)"),
    "flip_flops": (_INT, "CLB flip-flops (registers)"),
}

#: device kind -> schema
SCHEMAS: dict[str, dict[str, tuple[str, str]]] = {"neuromorphic": SCHEMA, "fpga": FPGA_SCHEMA}

_ENUMS = {"unshared_synapse_encoding": ("dense", "indexed"), "shared_synapse_encoding": ("dense", "indexed"),
          "builtin_compare": (">", ">="), "builtin_reset": ("zero", "subtract")}
_ENTRY_FIELDS = ("value", "unit", "source", "confidence")


class TargetSpecError(StepDeployError, ValueError):
    """A spec file is missing keys or has values of the wrong type. The message names each."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, list(problems)
        super().__init__(f"invalid target spec {where}:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class Limit:
    key: str
    value: Any
    unit: str
    source: str
    confidence: str
    note: str = ""

    def as_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source,
                "confidence": self.confidence, "note": self.note}


@dataclass(frozen=True)
class TargetSpec:
    """A loaded, validated target. ``limit(key)`` gives the value, ``source(key)`` where it is from."""

    name: str
    description: str
    limits: Mapping[str, Limit] = field(hash=False, compare=False)
    path: str = ""
    kind: str = "neuromorphic"

    def entry(self, key: str) -> Limit:
        try:
            return self.limits[key]
        except KeyError:
            raise KeyError(f"target {self.name!r} has no limit {key!r} (known: {', '.join(self.limits)})") from None

    def limit(self, key: str) -> Any:
        return self.entry(key).value

    def source(self, key: str) -> str:
        return self.entry(key).source

    def confidence(self, key: str) -> str:
        return self.entry(key).confidence

    def cite(self, key: str) -> str:
        """``value unit (confidence; source)`` for messages and reports."""
        e = self.entry(key)
        return f"{e.value} {e.unit} ({e.confidence}; {e.source})"

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.description, "path": self.path,
                "limits": {k: v.as_dict() for k, v in self.limits.items()}}


def _type_ok(kind: str, v: Any) -> bool:
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if kind == _INT:
        return is_int
    if kind == _OPT_INT:
        return v is None or is_int
    if kind == _BOOL:
        return isinstance(v, bool)
    if kind == _STR:
        return isinstance(v, str)
    is_list = isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    return is_list or (kind == _OPT_INT_LIST and v is None)


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise TargetSpecError(str(path), [f"cannot read the file: {e}"]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise TargetSpecError(str(path), [f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {e}"]) from None
    if not isinstance(data, dict):
        raise TargetSpecError(str(path), ["the file must hold a mapping with 'name' and 'limits'"])
    return data


def _entry(key: str, raw: Any, where: str, base: Limit | None, problems: list[str], schema: dict) -> Limit | None:
    if not isinstance(raw, dict):
        if base is None:
            problems.append(f"limit {key!r}: expected a mapping with {', '.join(_ENTRY_FIELDS)}, got {raw!r}")
            return None
        raw = {"value": raw, "unit": base.unit, "source": f"user spec {where}", "confidence": "primary",
               "note": f"overrides {base.value} ({base.source})"}
    missing = [f for f in _ENTRY_FIELDS if f not in raw]
    if missing:
        problems.append(f"limit {key!r}: missing field(s) {', '.join(missing)}")
        return None
    check_provenance(f"limit {key!r}", raw, problems)
    kind = schema.get(key, (None,))[0]
    if kind is not None and not _type_ok(kind, raw["value"]):
        problems.append(f"limit {key!r}: value must be {kind}, got {type(raw['value']).__name__} {raw['value']!r}")
    if key in _ENUMS and raw["value"] not in _ENUMS[key]:
        problems.append(f"limit {key!r}: value {raw['value']!r} is not one of {_ENUMS[key]}")
    return Limit(key, raw["value"], str(raw["unit"]), str(raw["source"]), str(raw["confidence"]), str(raw.get("note", "")))


def _resolve(name_or_path: str | Path) -> Path:
    s = str(name_or_path)
    if s in BUILTIN:
        return SPEC_DIR / f"{s}.yaml"
    p = Path(s)
    if not p.exists():
        raise TargetSpecError(s, [f"no such file, and not a built-in target (built-in: {', '.join(BUILTIN)})"])
    return p


def load_target(name_or_path: str | Path, _seen: tuple = ()) -> TargetSpec:
    """Load a built-in spec (``BUILTIN``: Loihi chips and FPGA parts) or a user YAML/JSON spec;
    the spec's ``kind`` picks the schema it is checked against."""
    if isinstance(name_or_path, TargetSpec):
        return name_or_path
    path = _resolve(name_or_path)
    where = str(path)
    if where in _seen:
        raise TargetSpecError(where, ["'extends' forms a cycle: " + " -> ".join(_seen + (where,))])
    data = _read(path)
    problems: list[str] = []
    base = None
    if data.get("extends") is not None:
        ext = data["extends"]
        if isinstance(ext, str) and ext not in BUILTIN and not Path(ext).is_absolute():
            ext = str(path.parent / ext)
        base = load_target(ext, _seen + (where,))
    for k in ("name",):
        if not isinstance(data.get(k), str) and base is None:
            problems.append(f"top-level key {k!r} is missing or not a string")
    kind = _kind(data, base, problems)
    schema = SCHEMAS.get(kind, SCHEMA)
    raw_limits = data.get("limits")
    if not isinstance(raw_limits, dict):
        problems.append("top-level key 'limits' is missing or not a mapping")
        raw_limits = {}
    limits: dict[str, Limit] = dict(base.limits) if base else {}
    for key, raw in raw_limits.items():
        if key not in schema:
            problems.append(f"limit {key!r}: unknown key for kind {kind!r} (known keys: {', '.join(schema)})")
            continue
        e = _entry(key, raw, where, limits.get(key), problems, schema)
        if e is not None:
            limits[key] = e
    missing = [k for k in schema if k not in limits]
    if missing:
        problems.append(f"missing limit(s): {', '.join(missing)}")
    if problems:
        raise TargetSpecError(where, problems)
    ordered = {k: limits[k] for k in schema}
    name = data.get("name") or (base.name + "-custom")
    desc = data.get("description") or (base.description if base else "")
    return TargetSpec(str(name), str(desc), MappingProxyType(ordered), where, kind)


def _kind(data: dict, base: TargetSpec | None, problems: list[str]) -> str:
    """The spec's device kind: its own ``kind``, else the base's, else ``neuromorphic``."""
    kind = data.get("kind")
    if kind is None:
        return base.kind if base else "neuromorphic"
    if kind not in KINDS:
        problems.append(f"top-level key 'kind': {kind!r} is not one of {', '.join(KINDS)}")
        return base.kind if base else "neuromorphic"
    if base is not None and kind != base.kind:
        problems.append(f"top-level key 'kind': {kind!r} differs from the kind of the spec it extends "
                        f"({base.name}: {base.kind!r})")
    return kind
