#!/usr/bin/env python3
"""The MQAR experiment's table and plot from mqar_experiment's JSON lines (docs/experiments.md).

    python3 scripts/plot_mqar.py RESULTS.jsonl OUTDIR

writes OUTDIR/mqar_table.md (per cell and model: mean and standard deviation of the test accuracy over
the seeds, the loss, the training time) and OUTDIR/mqar.svg (left: test accuracy against the sequence
length, one line per model and number of pairs, error bars one standard deviation over the seeds;
right: the mean training time per run of each model). The standard library only: matplotlib may be
absent on the machine that runs the experiment.
"""
import json
import math
import os
import sys
from collections import defaultdict

MODELS = ["mamba2", "transformer", "transmamba-v9", "transmamba-quarter"]
LABELS = {"mamba2": "Mamba2 (P = 0)", "transformer": "Transformer (P = L)",
          "transmamba-v9": "TransMamba V9", "transmamba-quarter": "TransMamba P = L/4"}
COLORS = {"mamba2": "#1f77b4", "transformer": "#d62728", "transmamba-v9": "#2ca02c",
          "transmamba-quarter": "#ff7f0e"}
DASHES = ["", "6,3", "2,2", "8,3,2,3"]


def read(path):
    runs, failed = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            run = json.loads(line)
            if "error" in run:
                failed.append(run)
                continue
            for key in ("model", "seq_len", "pairs", "seed", "test_accuracy", "train_seconds"):
                if key not in run:
                    sys.exit(f"{path}:{number}: the line has no '{key}'")
            runs.append(run)
    if not runs:
        sys.exit(f"{path}: no successful run")
    return runs, failed


def mean_sd(values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def model_order(runs):
    present = {r["model"] for r in runs}
    return [m for m in MODELS if m in present] + sorted(present - set(MODELS))


def table(runs, failed):
    cells = defaultdict(list)
    for r in runs:
        cells[(r["seq_len"], r["pairs"], r["model"])].append(r)
    models = model_order(runs)
    first = runs[0]
    lines = [
        f"Model: {first['layers']} mixer layers, d_model {first['d_model']}, headdim {first['headdim']}, "
        f"d_state {first['d_state']}, vocabulary {first['vocab']}, {first['parameters']} parameters for every schedule; "
        f"{first['steps']} steps of batch {first['batch']}, peak lr {first['lr']}; "
        f"{first['test_queries']} held-out queries per run; chance {first['chance']:.3f}.",
        "",
        "| L | pairs | model | P per layer | seeds | test accuracy (mean ± sd) | test loss | train time per run (s) | tokens/s |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for L, pairs in sorted({(k[0], k[1]) for k in cells}):
        for m in models:
            group = cells.get((L, pairs, m))
            if not group:
                continue
            acc, acc_sd = mean_sd([r["test_accuracy"] for r in group])
            loss, _ = mean_sd([r["test_loss"] for r in group])
            secs, _ = mean_sd([r["train_seconds"] for r in group])
            rate = sum(r["tokens"] for r in group) / sum(r["train_seconds"] for r in group)
            points = ",".join(str(p) for p in group[0]["transpoints"])
            lines.append(f"| {L} | {pairs} | {LABELS.get(m, m)} | {points} | {len(group)} | "
                         f"{acc:.3f} ± {acc_sd:.3f} | {loss:.3f} | {secs:.1f} | {rate:.0f} |")
    if failed:
        lines += ["", f"{len(failed)} run(s) failed:"]
        lines += [f"- {f['model']} L {f['seq_len']} pairs {f['pairs']} seed {f['seed']}: {f['error']}" for f in failed]
    return "\n".join(lines) + "\n"


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(runs):
    models = model_order(runs)
    lengths = sorted({r["seq_len"] for r in runs})
    pair_counts = sorted({r["pairs"] for r in runs})
    by = defaultdict(list)
    for r in runs:
        by[(r["model"], r["pairs"], r["seq_len"])].append(r["test_accuracy"])

    W, H = 980, 470
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']

    # Left panel: accuracy against L (log2 axis when there are several lengths).
    x0, y0, pw, ph = 60, 40, 460, 300
    out.append(f'<text x="{x0 + pw / 2}" y="22" text-anchor="middle" font-size="14">'
               f'MQAR test accuracy (mean ± sd over seeds)</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    logs = [math.log2(L) for L in lengths]
    lo, hi = min(logs), max(logs)
    span = hi - lo if hi > lo else 1.0

    def px(L):
        return x0 + 30 + (math.log2(L) - lo) / span * (pw - 60) if hi > lo else x0 + pw / 2

    def py(a):
        return y0 + ph - a * ph

    for a in [0, 0.25, 0.5, 0.75, 1.0]:
        out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{py(a)}" y2="{py(a)}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{py(a) + 4}" text-anchor="end">{a:g}</text>')
    for L in lengths:
        out.append(f'<text x="{px(L)}" y="{y0 + ph + 16}" text-anchor="middle">{L}</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 34}" text-anchor="middle">sequence length L</text>')
    out.append(f'<text x="18" y="{y0 + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {y0 + ph / 2})">'
               f'accuracy on the queried values</text>')
    chance = runs[0].get("chance")
    if chance:
        out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{py(chance)}" y2="{py(chance)}" stroke="#888" '
                   f'stroke-dasharray="1,3"/><text x="{x0 + pw - 4}" y="{py(chance) - 4}" text-anchor="end" '
                   f'fill="#888">chance</text>')
    legend = []
    for mi, m in enumerate(models):
        for pi, p in enumerate(pair_counts):
            pts = []
            for L in lengths:
                values = by.get((m, p, L))
                if values:
                    mean, sd = mean_sd(values)
                    pts.append((px(L), py(mean), py(max(0.0, mean - sd)), py(min(1.0, mean + sd))))
            if not pts:
                continue
            # Each model's markers shifted a little sideways, so the error bars do not hide each other.
            dx = (mi - (len(models) - 1) / 2) * 4
            color, dash = COLORS.get(m, "black"), DASHES[pi % len(DASHES)]
            path = " ".join(f"{x + dx:.1f},{y:.1f}" for x, y, _, _ in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"'
                       + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
            for x, y, ylo, yhi in pts:
                out.append(f'<line x1="{x + dx:.1f}" x2="{x + dx:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" stroke="{color}"/>')
                out.append(f'<circle cx="{x + dx:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
            legend.append((f"{LABELS.get(m, m)}, {p} pairs", color, dash))
    ly = y0 + ph + 52
    for i, (text, color, dash) in enumerate(legend):
        lx, yy = x0 + (i % 2) * 240, ly + (i // 2) * 16
        out.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{yy - 4}" y2="{yy - 4}" stroke="{color}" stroke-width="2"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        out.append(f'<text x="{lx + 30}" y="{yy}">{esc(text)}</text>')

    # Right panel: mean training time per run, per model (over every cell and seed).
    bx0, bpw = 600, 340
    out.append(f'<text x="{bx0 + bpw / 2}" y="22" text-anchor="middle" font-size="14">'
               f'training time per run (s), mean over the grid</text>')
    times = {m: mean_sd([r["train_seconds"] for r in runs if r["model"] == m]) for m in models}
    top = max(mean + sd for mean, sd in times.values()) or 1.0
    bar = ph / max(1, len(models)) * 0.6
    for i, m in enumerate(models):
        mean, sd = times[m]
        y = y0 + (i + 0.2) * ph / len(models)
        w = mean / top * (bpw - 120)
        out.append(f'<rect x="{bx0 + 110}" y="{y:.1f}" width="{w:.1f}" height="{bar:.1f}" fill="{COLORS.get(m, "gray")}"/>')
        e = (mean + sd) / top * (bpw - 120)
        out.append(f'<line x1="{bx0 + 110 + w:.1f}" x2="{bx0 + 110 + e:.1f}" y1="{y + bar / 2:.1f}" y2="{y + bar / 2:.1f}" stroke="black"/>')
        out.append(f'<text x="{bx0 + 104}" y="{y + bar / 2 + 4:.1f}" text-anchor="end">{esc(LABELS.get(m, m))}</text>')
        out.append(f'<text x="{bx0 + 114 + e:.1f}" y="{y + bar / 2 + 4:.1f}">{mean:.1f}</text>')
    first = runs[0]
    out.append(f'<text x="{bx0}" y="{y0 + ph + 34}">{first["parameters"]} parameters each, {first["steps"]} steps, '
               f'{first["threads"]} thread(s) per run</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_mqar.py RESULTS.jsonl OUTDIR")
    runs, failed = read(sys.argv[1])
    os.makedirs(sys.argv[2], exist_ok=True)
    with open(os.path.join(sys.argv[2], "mqar_table.md"), "w") as f:
        f.write(table(runs, failed))
    with open(os.path.join(sys.argv[2], "mqar.svg"), "w") as f:
        f.write(svg(runs))
    print(f"{len(runs)} runs ({len(failed)} failed): {sys.argv[2]}/mqar_table.md, {sys.argv[2]}/mqar.svg")


if __name__ == "__main__":
    main()
