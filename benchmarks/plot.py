"""Plot the benchmarks' JSON lines into one PNG (the README's performance figure).

    python benchmarks/bench_embed.py > embed.txt; python benchmarks/bench_e2e.py > e2e.txt
    python benchmarks/bench_modes.py > modes.txt; python benchmarks/bench_scale.py D > scale.txt
    python benchmarks/plot.py --embed embed.txt --e2e e2e.txt --modes modes.txt \
        --scale scale.txt -o docs/performance.png

Any input may be left out; its panel is then skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(path: Path | None) -> list[dict]:
    if path is None:
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embed", type=Path)
    ap.add_argument("--e2e", type=Path)
    ap.add_argument("--modes", type=Path)
    ap.add_argument("--scale", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("performance.png"))
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    embed = [r for r in rows(args.embed) if "bench" in r]
    if embed:
        panels.append(("Stages (images/s, 2 threads)", embed, "bench", "images_per_s"))
    e2e_best: dict[str, dict] = {}  # each pipeline's fastest round
    for r in rows(args.e2e):
        if "pipeline" not in r:
            continue
        best = e2e_best.get(r["pipeline"])
        if best is None or r["images_per_s"] > best["images_per_s"]:
            e2e_best[r["pipeline"]] = r
    e2e = list(e2e_best.values())
    if e2e:
        panels.append(("End to end, local[2] (images/s)", e2e, "pipeline", "images_per_s"))
    modes = rows(args.modes)
    if modes:
        panels.append(("Fast modes (images/s)", modes, "mode", "images_per_s"))
    scale = rows(args.scale)
    if scale:
        panels.append(("Scale: fruitlens run (images/s)", scale, "images", "images_per_s"))
    if not panels:
        raise SystemExit("nothing to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, data, key, value) in zip(axes, panels):
        labels = [str(r[key]) for r in data]
        vals = [float(r[value]) for r in data]
        bars = ax.barh(labels, vals, color="#4c8c4a")
        ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, max(vals) * 1.15)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
