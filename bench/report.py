#!/usr/bin/env python3
"""Tables and plots from benchmark JSON files: ours (the bench_cuda_* programs' Google Benchmark
--benchmark_out files) next to the peers (bench/peers/*.py --json files).

Every record is named `<component>/<impl>/<dtype>/<key>:<value>/...` (keys b, L, h, p, n, g, P,
cache, graph, in that order where they apply). Google Benchmark's suffixes (/iterations:N,
/manual_time, /real_time, /repeats:N, /threads:N, /min_time:...) are dropped; records with
"run_type": "aggregate" are ignored, except that a name with no other record takes its "median"
aggregate; records flagged "error_occurred" and names outside the convention are skipped and
counted. The time of a record is its "median_ms" counter, else its real_time in its time_unit; a
name seen several times (repetitions, several files) takes the median of them.

Matching: rows are (component, dtype, shape keys, graph). A record without a graph key is eager
(graph 0), so a side that lacks the key is matched eager to eager; a record with a "graph_ms"
counter and no graph key (the C++ scan and converter programs) also gives a graph 1 row. Our impls
are `transmamba` and its variants `transmamba_*`; every other impl is a peer. The ratio column
`<peer>/<ours>` is peer time / our time: > 1 means we are faster.

Output: one markdown table per component on stdout and, with --md FILE, in that file; with
--plots DIR (needs matplotlib) two PNGs:
  time_vs_L.png  (a) time against L, log-log, at b x L fixed: attention and scan, ours and the
                 peers, the attention/scan crossover marked (ours: transmamba vs transmamba,
                 peers: sdpa vs triton_ssd); and the layer at each TransPoint fraction P / L
  time_vs_P.png  (b) the layer's time against P at fixed L (the paper's Fig. 4), ours and
                 torch_layer, each with its least-squares quadratic a + b P + c P^2
Missing files, truncated JSON (a run cut short: the complete records are kept), absent
components and absent matplotlib are reported and skipped.

Usage: python3 bench/report.py FILE_OR_DIR... [--md report.md] [--plots DIR]
(a directory stands for every *.json under it)
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict

KEY_ORDER = ("b", "L", "h", "p", "n", "g", "P", "cache", "graph")
SHAPE_KEYS = KEY_ORDER[:-1]
DTYPES = ("bf16", "fp32", "f16", "tf32")
GBENCH_SUFFIX = re.compile(r"^(iterations|repeats|threads|min_time|min_warmup_time):|^(manual_time|real_time|process_time)$")
TIME_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
PEER_ORDER = ("sdpa", "sdpa_kernel", "fa2", "triton_ssd", "triton_ssd_state", "torch_einsum", "torch_layer", "ssu",
              "sdpa_kvcache", "ggml", "eigen")
COMPONENT_ORDER = ("attention", "scan", "converter", "layer", "decode_ssm", "decode_attention", "gemm")


def is_ours(impl):
    return impl == "transmamba" or impl.startswith("transmamba_")


# --- reading --------------------------------------------------------------------------------------

def parse_name(name):
    """(component, impl, dtype, {key: value}) or None when the name is outside the convention."""
    parts = [p for p in name.split("/") if p and not GBENCH_SUFFIX.match(p)]
    if len(parts) < 3 or any(":" in p for p in parts[:3]) or parts[2] not in DTYPES:
        return None
    keys = {}
    for part in parts[3:]:
        key, sep, value = part.partition(":")
        if not sep or key not in KEY_ORDER:
            return None
        keys[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return parts[0], parts[1], parts[2], keys


def salvage_json(text):
    """The longest prefix of a truncated JSON text that parses once its open brackets are closed."""
    stack, closings, in_string, escaped = [], [], False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if stack:
                stack.pop()
            closings.append((i, "".join(reversed(stack))))
    for i, closing in reversed(closings[-2000:]):
        try:
            return json.loads(text[:i + 1] + closing)
        except json.JSONDecodeError:
            continue
    return None


def load_file(path, notes):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        notes.append(f"{path}: not read ({e.strerror})")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        data = salvage_json(text)
        if data is None:
            notes.append(f"{path}: not JSON, nothing salvaged")
        else:
            notes.append(f"{path}: truncated JSON, the complete records kept")
        return data


def record_ms(rec):
    if "median_ms" in rec:
        return float(rec["median_ms"])
    if "real_time" in rec:
        return float(rec["real_time"]) * TIME_UNIT_MS.get(rec.get("time_unit", "ns"), 1e-6)
    return None


class Table:
    """Every measurement, keyed by row (component, dtype, shape keys, graph) and impl."""

    def __init__(self):
        self.values = defaultdict(lambda: defaultdict(list))  # row -> impl -> [ms]
        self.extra = defaultdict(dict)  # (row, impl) -> the last record's counters
        self.skipped = defaultdict(int)
        self.contexts = []

    def add(self, component, impl, dtype, keys, ms, rec):
        graph = int(keys.pop("graph", 0))
        shape = tuple((k, keys[k]) for k in SHAPE_KEYS if k in keys)
        row = (component, dtype, shape, graph)
        self.values[row][impl].append(ms)
        self.extra[(row, impl)] = rec
        return row

    def load(self, path, notes):
        data = load_file(path, notes)
        if data is None:
            return
        if isinstance(data, list):  # a bare list of records
            data = {"benchmarks": data}
        self.contexts.append((path, data.get("context", {})))
        records = [r for r in data.get("benchmarks", []) if isinstance(r, dict) and "name" in r]
        plain = [r for r in records if r.get("run_type") != "aggregate"]
        named = {r.get("run_name", r["name"]) for r in plain}
        medians = [r for r in records if r.get("run_type") == "aggregate" and r.get("aggregate_name") == "median"
                   and r.get("run_name", r["name"]) not in named]
        count = 0
        for rec in plain + medians:
            if rec.get("error_occurred"):
                self.skipped["error_occurred"] += 1
                continue
            parsed = parse_name(rec.get("run_name", rec["name"]))
            ms = record_ms(rec)
            if parsed is None or ms is None:
                self.skipped[rec["name"].split("/")[0]] += 1
                continue
            component, impl, dtype, keys = parsed
            had_graph = "graph" in keys
            self.add(component, impl, dtype, dict(keys), ms, rec)
            if not had_graph and isinstance(rec.get("graph_ms"), (int, float)) and rec["graph_ms"] > 0:
                self.add(component, impl, dtype, dict(keys, graph=1), float(rec["graph_ms"]), {})
            count += 1
        notes.append(f"{path}: {count} records")

    def ms(self, row, impl):
        values = self.values.get(row, {}).get(impl)
        return statistics.median(values) if values else None

    def components(self):
        found = {row[0] for row in self.values}
        return [c for c in COMPONENT_ORDER if c in found] + sorted(found - set(COMPONENT_ORDER))

    def impls(self, component):
        found = {impl for row, per in self.values.items() if row[0] == component for impl in per}
        ours = sorted(i for i in found if is_ours(i))
        peers = sorted((i for i in found if not is_ours(i)),
                       key=lambda i: (PEER_ORDER.index(i) if i in PEER_ORDER else len(PEER_ORDER), i))
        return ours, peers


# --- tables ---------------------------------------------------------------------------------------

def fmt_ms(v):
    if v is None:
        return ""
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:#.3g}"


def fmt_rate(rec):
    """'156 TF/s 23%' or '2100 GB/s 70%', whichever is the larger fraction of its ceiling."""
    if not rec:
        return ""
    tf, gb = rec.get("TFLOP_per_s"), rec.get("GB_per_s")
    ff, bf = rec.get("flop_fraction"), rec.get("byte_fraction")
    if gb is not None and (tf is None or (bf or 0) > (ff or 0)):
        return f"{gb:.0f} GB/s" + (f" {100 * bf:.0f}%" if bf is not None else "")
    if tf is not None:
        return f"{tf:.1f} TF/s" + (f" {100 * ff:.0f}%" if ff is not None else "")
    return ""


def row_order(row):
    """dtype, then the variant (h, p, n, g), then the sweep (L, P, cache), then b, then graph."""
    shape = dict(row[2])
    value = lambda k: (0, shape[k], "") if isinstance(shape.get(k), int) else (1, 0, str(shape.get(k, "")))
    return (row[1], [value(k) for k in ("h", "p", "n", "g", "L", "P", "cache", "b")], row[3])


def component_table(table, component):
    """Markdown lines for one component."""
    rows = sorted((r for r in table.values if r[0] == component), key=row_order)
    ours, peers = table.impls(component)
    keys = [k for k in SHAPE_KEYS if any(k in dict(r[2]) for r in rows)]
    pairs = [(peer, our) for peer in peers for our in ours
             if any(table.ms(r, peer) is not None and table.ms(r, our) is not None for r in rows)]
    rated = [o for o in ours if any(fmt_rate(table.extra.get((r, o))) for r in rows)]
    header = ["dtype"] + keys + ["graph"] + [f"{i} ms" for i in ours + peers] + [f"{o} rate" for o in rated] + \
        [f"{p}/{o}" for p, o in pairs]
    lines = [f"## {component}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        shape = dict(row[2])
        cells = [row[1]] + [str(shape.get(k, "")) for k in keys] + [str(row[3])]
        cells += [fmt_ms(table.ms(row, i)) for i in ours + peers]
        cells += [fmt_rate(table.extra.get((row, o))) for o in rated]
        for peer, our in pairs:
            a, b = table.ms(row, peer), table.ms(row, our)
            cells.append(f"{a / b:.2f}" if a and b else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if pairs:
        lines.append(f"Ratios: peer time / our time (> 1: we are faster); ours: {', '.join(ours)}.")
        lines.append("")
    return lines


def report_markdown(table, notes):
    lines = ["# Benchmark report", "", "Files:", ""]
    lines += [f"- {n}" for n in notes]
    devices = sorted({str(c.get("device") or c.get("host_name") or "?") for _, c in table.contexts})
    if devices:
        lines += ["", "Devices / hosts named in the files: " + ", ".join(devices)]
    if table.skipped:
        lines += ["", "Skipped records (outside the naming convention or failed): " +
                  ", ".join(f"{k} x{v}" for k, v in sorted(table.skipped.items()))]
    lines.append("")
    components = table.components()
    if not components:
        lines.append("No records in the naming convention were found.")
    for component in components:
        lines += component_table(table, component)
    return "\n".join(lines) + "\n"


# --- plots ----------------------------------------------------------------------------------------

def series(table, component, dtype, fixed, impl, graph, x_key, tokens=None):
    """[(x, ms)] over the rows of one component whose shape matches `fixed` except x_key and b
    (and, given tokens, whose b x L is that many: the sweeps hold it constant)."""
    points = []
    for row, per in table.values.items():
        if row[0] != component or row[1] != dtype or row[3] != graph or impl not in per:
            continue
        shape = dict(row[2])
        if x_key not in shape or {k: v for k, v in shape.items() if k not in (x_key, "b")} != fixed:
            continue
        if tokens is not None and shape.get("b", 1) * shape.get("L", 1) != tokens:
            continue
        points.append((shape[x_key], table.ms(row, impl)))
    return sorted(points)


def sweep_family(table, component, dtype=None, by_tokens=True):
    """(dtype, fixed keys, tokens) of the family with the most distinct L values (ties: bf16,
    g 1); tokens = its b x L (records of other sizes, e.g. extra shapes at one L, stay out of the
    curve), None when by_tokens is off."""
    count = defaultdict(set)
    for row in table.values:
        if row[0] != component or (dtype and row[1] != dtype):
            continue
        shape = dict(row[2])
        if "L" in shape:
            fixed = tuple(sorted((k, v) for k, v in shape.items() if k not in ("L", "b")))
            tokens = shape.get("b", 1) * shape["L"] if by_tokens else None
            count[(row[1], fixed, tokens)].add(shape["L"])
    if not count:
        return None
    best = max(count, key=lambda f: (len(count[f]), f[0] == "bf16", dict(f[1]).get("g") == 1))
    return (best[0], dict(best[1]), best[2]) if len(count[best]) >= 2 else None


def crossover(att, scan):
    """The L where the two curves cross (log-log interpolation), or None."""
    a, s = dict(att), dict(scan)
    common = sorted(set(a) & set(s))
    for l1, l2 in zip(common, common[1:]):
        d1, d2 = math.log(a[l1] / s[l1]), math.log(a[l2] / s[l2])
        if d1 == 0:
            return l1
        if d1 * d2 < 0:
            t = d1 / (d1 - d2)
            return math.exp(math.log(l1) + t * (math.log(l2) - math.log(l1)))
    return None


def plot_time_vs_L(table, plt, path, notes):
    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(15, 6))
    drawn = False
    att_family = sweep_family(table, "attention")
    scan_family = sweep_family(table, "scan", att_family[0] if att_family else None) or sweep_family(table, "scan")
    curves, titles = {}, []
    for component, family in (("attention", att_family), ("scan", scan_family)):
        if not family:
            notes.append(f"plot (a): no {component} sweep over L")
            continue
        dtype, fixed, tokens = family
        ours, peers = table.impls(component)
        for impl in [i for i in ours + peers if not i.startswith("sdpa_kernel_")]:
            for graph in (0, 1):
                pts = series(table, component, dtype, fixed, impl, graph, "L", tokens)
                if len(pts) < 2:
                    continue
                curves[(component, impl, graph)] = pts
                style = "-" if is_ours(impl) else "--"
                marker = "o" if component == "attention" else "s"
                ax_a.plot(*zip(*pts), style, marker=marker, markersize=4, alpha=1.0 if graph == 0 else 0.55,
                          label=f"{component} {impl}{' (graph)' if graph else ''}")
                drawn = True
        titles.append(f"{component}: {dtype}, " + ", ".join(f"{k} {v}" for k, v in fixed.items()))
    ax_a.set_title("\n".join(titles) + " (eager: opaque, graph: faded)", fontsize=9)
    for label, att_impl, scan_impl in (("ours", "transmamba", "transmamba"), ("peers", "sdpa", "triton_ssd")):
        att, scan = curves.get(("attention", att_impl, 0)), curves.get(("scan", scan_impl, 0))
        if not att or not scan:
            continue
        x = crossover(att, scan)
        if x is None:
            notes.append(f"plot (a): {label}: attention and scan do not cross over the L measured")
            continue
        ax_a.axvline(x, color="k" if label == "ours" else "gray", linestyle=":",
                     label=f"crossover, {label} ({att_impl} = {scan_impl}): L ~ {x:.0f}")
        notes.append(f"plot (a): {label}: attention ({att_impl}) = scan ({scan_impl}) at L ~ {x:.0f}")
    ax_a.set_xscale("log", base=2)
    ax_a.set_yscale("log")
    ax_a.set_xlabel("L (batch x L fixed)")
    ax_a.set_ylabel("ms (median)")
    ax_a.grid(True, which="both", alpha=0.3)
    if drawn:
        ax_a.legend(fontsize=7)

    layer_drawn = False
    family = sweep_family(table, "layer", by_tokens=False)  # the layer's sizes are not one token count
    if family:
        dtype, fixed, _ = family
        fixed = {k: v for k, v in fixed.items() if k != "P"}
        ours, peers = table.impls("layer")
        fractions = sorted({fraction_of(row) for row in table.values if row[0] == "layer" and row[1] == dtype
                            and fraction_of(row) is not None})
        for f_idx, frac in enumerate(fractions):
            for impl in ours + peers:
                pts = []
                for row, per in table.values.items():
                    shape = dict(row[2])
                    if (row[0] != "layer" or row[1] != dtype or row[3] != 0 or impl not in per
                            or fraction_of(row) != frac
                            or {k: v for k, v in shape.items() if k not in ("L", "b", "P")} != fixed):
                        continue
                    pts.append((shape["L"], table.ms(row, impl)))
                if len(pts) < 2:
                    continue
                ax_l.plot(*zip(*sorted(pts)), "-" if is_ours(impl) else "--", color=f"C{f_idx}", marker="o",
                          markersize=4, label=f"{impl} P = {frac_label(frac)}")
                layer_drawn = True
        ax_l.set_title(f"layer (eager): {dtype}, " + ", ".join(f"{k} {v}" for k, v in fixed.items()))
    else:
        notes.append("plot (a): no layer sweep over L")
    ax_l.set_xscale("log", base=2)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("L (batch x L fixed)")
    ax_l.set_ylabel("ms (median)")
    ax_l.grid(True, which="both", alpha=0.3)
    if layer_drawn:
        ax_l.legend(fontsize=7, ncol=2)
    if not drawn and not layer_drawn:
        plt.close(fig)
        notes.append("plot (a): nothing to draw")
        return
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    notes.append(f"plot (a): {path}")


def fraction_of(row):
    """P / L of a layer row as a rounded float, or None."""
    shape = dict(row[2])
    if "P" not in shape or "L" not in shape or not shape["L"]:
        return None
    return round(shape["P"] / shape["L"], 6)


def frac_label(f):
    return {0.0: "0", 0.125: "L/8", 0.25: "L/4", 0.5: "L/2", 1.0: "L"}.get(f, f"{f:.3g} L")


def quadratic_fit(xs, ys):
    """Least-squares a + b x + c x^2 (normal equations; x scaled for conditioning)."""
    if len(xs) < 3:
        return None
    scale = max(xs) or 1
    s = [x / scale for x in xs]
    m = [[sum(t ** (i + j) for t in s) for j in range(3)] for i in range(3)]
    r = [sum(y * t ** i for t, y in zip(s, ys)) for i in range(3)]
    for col in range(3):  # Gauss-Jordan with partial pivoting
        piv = max(range(col, 3), key=lambda k: abs(m[k][col]))
        if abs(m[piv][col]) < 1e-300:
            return None
        m[col], m[piv], r[col], r[piv] = m[piv], m[col], r[piv], r[col]
        for k in range(3):
            if k != col:
                f = m[k][col] / m[col][col]
                m[k] = [a - f * b for a, b in zip(m[k], m[col])]
                r[k] -= f * r[col]
    a, b, c = (r[i] / m[i][i] for i in range(3))
    return lambda x: a + b * (x / scale) + c * (x / scale) ** 2


def plot_time_vs_P(table, plt, path, notes):
    families = defaultdict(set)
    for row in table.values:
        if row[0] == "layer":
            shape = dict(row[2])
            if "P" in shape:
                families[(row[1], tuple((k, v) for k, v in row[2] if k != "P"))].add(shape["P"])
    families = sorted((f for f, ps in families.items() if len(ps) >= 2),
                      key=lambda f: (f[0] != "bf16", dict(f[1]).get("L", 0), dict(f[1]).get("g", 0)))
    if not families:
        notes.append("plot (b): no layer records with several P")
        return
    cols = min(3, len(families))
    rows_n = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.5 * cols, 4.2 * rows_n), squeeze=False)
    ours, peers = table.impls("layer")
    for ax, (dtype, fixed) in zip([a for r in axes for a in r], families):
        fixed = dict(fixed)
        for idx, impl in enumerate(ours + peers):
            for graph in (0, 1):
                pts = []
                for row, per in table.values.items():
                    shape = dict(row[2])
                    if (row[0] == "layer" and row[1] == dtype and row[3] == graph and impl in per and "P" in shape
                            and {k: v for k, v in shape.items() if k != "P"} == fixed):
                        pts.append((shape["P"], table.ms(row, impl)))
                if len(pts) < 2:
                    continue
                pts.sort()
                color = f"C{2 * idx + graph}"
                ax.plot(*zip(*pts), "o", color=color, label=f"{impl}{' (graph)' if graph else ''}")
                fit = quadratic_fit(*zip(*pts))
                if fit:
                    xs = [pts[-1][0] * i / 50 for i in range(51)]
                    ax.plot(xs, [fit(x) for x in xs], "-" if is_ours(impl) else "--", color=color, linewidth=1)
        ax.set_title(f"layer {dtype}: " + ", ".join(f"{k} {v}" for k, v in fixed.items()), fontsize=9)
        ax.set_xlabel("TransPoint P")
        ax.set_ylabel("ms (median)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in [a for r in axes for a in r][len(families):]:
        ax.axis("off")
    fig.suptitle("Layer time against the TransPoint (points: measured; lines: quadratic fit)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    notes.append(f"plot (b): {path}")


def make_plots(table, directory, notes):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        notes.append("plots: matplotlib is not installed, none drawn")
        return
    os.makedirs(directory, exist_ok=True)
    for name, draw in (("time_vs_L.png", plot_time_vs_L), ("time_vs_P.png", plot_time_vs_P)):
        try:
            draw(table, plt, os.path.join(directory, name), notes)
        except Exception as e:  # a plot must never cost the tables
            notes.append(f"plot {name}: failed: {type(e).__name__}: {e}")


# --- main -----------------------------------------------------------------------------------------

def expand_inputs(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".json")]
        else:
            files.append(path)
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", help="JSON files, or directories holding them")
    ap.add_argument("--md", help="write the markdown report here too")
    ap.add_argument("--plots", help="write the PNG plots into this directory")
    args = ap.parse_args(argv)
    notes, table = [], Table()
    for path in expand_inputs(args.inputs):
        table.load(path, notes)
    plot_notes = []
    if args.plots:
        make_plots(table, args.plots, plot_notes)
    text = report_markdown(table, notes + plot_notes)
    print(text)
    if args.md:
        os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
        with open(args.md, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
