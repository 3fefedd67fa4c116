"""The figure of ``benchmarks/seed_designs.py`` (its own file: the script stays a readable size)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def plot(rows: list[dict], path: Path) -> Optional[Path]:
    """``seed_designs.png``: per data set, float and integer (golden Loihi, golden FPGA) accuracy against
    the horowitz/float32 energy per sample, one marker per design (rows without numbers are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = sorted({r["data"] for r in rows})
    usable = [r for r in rows if isinstance(r.get("float_accuracy"), float)
              and isinstance((r.get("energy_uj") or {}).get("horowitz/float32"), float)]
    if not usable:
        return None
    fig, axes = plt.subplots(1, len(datas), figsize=(6.5 * len(datas), 4.8), squeeze=False)
    designs = sorted({r["design"] for r in usable})
    colors = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(designs)}
    for ax, data in zip(axes[0], datas):
        for r in (r for r in usable if r["data"] == data):
            x = r["energy_uj"]["horowitz/float32"]
            c = colors[r["design"]]
            ax.scatter([x], [100 * r["float_accuracy"]], color=c, marker="o", s=50, label=r["design"])
            for key, m in (("golden_loihi_accuracy", "s"), ("golden_fpga_accuracy", "^")):
                if isinstance(r.get(key), float):
                    ax.scatter([x], [100 * r[key]], color=c, marker=m, s=28, alpha=0.7)
                ptq = r.get("float_trained")
                if isinstance(ptq, dict) and isinstance(ptq.get(key), float):  # the float-trained model's PTQ
                    ax.scatter([x], [100 * ptq[key]], facecolors="none", edgecolors=[c], marker=m, s=40)
        ax.set_title(f"{data}: accuracy vs energy", fontsize=9)
        ax.set_xlabel("energy per sample, horowitz/float32 (uJ)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    ptq = any(isinstance(r.get("float_trained"), dict) for r in usable)
    fig.suptitle("o float, square golden Loihi, triangle golden FPGA" + (
        "; filled: the on-grid fine-tuned model (where float = integer the marks coincide), hollow: post-training "
        "quantization of the float-trained model" if ptq else ""), fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
