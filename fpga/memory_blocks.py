"""Where one on-chip memory of a generated design lands and how many blocks it takes (an estimate).

Rule (stated once, used by every layer estimate):
  * A memory of ``bits`` split into ``banks`` (HLS ``ARRAY_PARTITION cyclic factor=banks``) is
    placed bank by bank; every bank gets its own blocks.
  * A bank of at most ``LUTRAM_MAX_BITS`` (1,024) bits goes to distributed RAM / LUT-ROM:
    ``ceil(words / 64) × word_bits`` LUTs (one 64 × 1 LUT RAM per bit of the word).
  * A RAM bank (membrane state, readout sum, layer output buffer) of at least ``URAM_MIN_BANK_BITS``
    (147,456 bits = 4 BRAM36) goes to UltraRAM when the part has URAM: ``ceil(bits / 294,912)``
    URAM288 per bank (elements packed into the 72-bit word). Weights never go to URAM: they are
    ``const`` ROMs initialised by the bitstream, and UltraScale+ UltraRAM has no bitstream
    initialisation (AMD documents UltraRAM initialisation as a Versal feature, UG1273 "UltraRAM
    Primitives").
  * Any other bank goes to block RAM, in the cheapest aspect ratio: a BRAM18 holds 16K × 1 ...
    512 × 36, a BRAM36 32K × 1 ... 512 × 72 (AMD UG573); counted in BRAM18 halves and rounded up
    to whole BRAM36 per layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

BRAM36_BITS = 36_864
URAM_BITS = 294_912
LUTRAM_MAX_BITS = 1_024
URAM_MIN_BANK_BITS = 4 * BRAM36_BITS
LUTRAM_DEPTH = 64
#: (depth, width) aspect ratios of one block (AMD UG573, UltraScale memory resources)
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM36_SHAPES = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72))

RULE = ("memories split into P banks; a bank <= 1,024 bits -> LUTRAM (ceil(words/64) x width LUTs); "
        "a RAM bank (state, buffer) >= 147,456 bits -> URAM when the part has URAM (ceil(bits/294,912) "
        "per bank; weight ROMs never: UltraScale+ URAM has no bitstream init); else BRAM in the cheapest "
        "aspect ratio (BRAM18 16Kx1..512x36, BRAM36 32Kx1..512x72), halves rounded up per layer")


@dataclass(frozen=True)
class Memory:
    """One array a layer owns: ``role`` (weights, bias, state, buffer), ``bits`` in all, split into
    ``banks``, each element ``word_bits`` wide; ``rom`` for constant arrays (weights, bias)."""

    role: str
    bits: int
    banks: int
    word_bits: int
    rom: bool = False


@dataclass(frozen=True)
class Placement:
    where: str  # 'none', 'lutram', 'uram' or 'bram'
    bram18: int = 0
    uram: int = 0
    lut: int = 0


def _bram18_per_bank(words: int, width: int) -> int:
    half = min(ceil(words / d) * ceil(width / w) for d, w in BRAM18_SHAPES)
    full = min(ceil(words / d) * ceil(width / w) for d, w in BRAM36_SHAPES)
    return min(half, 2 * full)


def place(mem: Memory, has_uram: bool) -> Placement:
    """The blocks ``mem`` takes under the rule in the module docstring."""
    if mem.bits <= 0:
        return Placement("none")
    banks = max(1, int(mem.banks))
    words = ceil(mem.bits / max(1, mem.word_bits))
    bank_words = ceil(words / banks)
    bank_bits = bank_words * mem.word_bits
    if bank_bits <= LUTRAM_MAX_BITS:
        return Placement("lutram", lut=banks * ceil(bank_words / LUTRAM_DEPTH) * mem.word_bits)
    if has_uram and not mem.rom and bank_bits >= URAM_MIN_BANK_BITS:
        return Placement("uram", uram=banks * ceil(bank_bits / URAM_BITS))
    return Placement("bram", bram18=banks * _bram18_per_bank(bank_words, mem.word_bits))


__all__ = ["Memory", "Placement", "place", "RULE", "BRAM36_BITS", "URAM_BITS", "LUTRAM_MAX_BITS",
           "URAM_MIN_BANK_BITS"]
