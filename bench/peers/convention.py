"""The naming convention and the JSON file, shared by the peer scripts in bench/peers/.

Record names are `<component>/<impl>/<dtype>/<key>:<value>/...` with the keys in KEY_ORDER (the
convention bench/report.py parses); a record is Google-Benchmark-shaped (name, real_time in ms)
with the rates derived from its median. The scripts import this module by its plain name: run as
`python3 bench/peers/<script>.py`, their directory is on sys.path; imported from elsewhere, put
bench/peers on PYTHONPATH.

torch and triton are imported inside the functions that need them, so that the naming helpers
load without them (and layer_torch.py's float64 reference without Triton).
"""
import datetime
import json
import os
import platform
import time

KEY_ORDER = ("b", "L", "h", "p", "n", "g", "P", "cache", "graph")
CEILING_TFLOPS = {"bf16": 676.0, "f16": 676.0, "tf32": 352.0, "fp32": 52.0}  # measured GEMM rates (PERF.md)
BANDWIDTH_GBS = 3000.0


def bench_name(component, impl, dtype, **keys):
    """`<component>/<impl>/<dtype>/<key>:<value>/...` with the keys in the convention's order."""
    unknown = set(keys) - set(KEY_ORDER)
    assert not unknown, f"keys outside the convention: {unknown}"
    return "/".join([component, impl, dtype] + [f"{k}:{keys[k]}" for k in KEY_ORDER if keys.get(k) is not None])


def make_record(name, ms, *, flops=None, nbytes=None, tokens=None, ceiling=None, **extra):
    """A Google-Benchmark-style record: the median time and the rates derived from it."""
    rec = {"name": name, "run_name": name, "run_type": "iteration", "real_time": ms, "time_unit": "ms",
           "median_ms": ms}
    seconds = ms * 1e-3
    if tokens:
        rec["tokens_per_s"] = tokens / seconds
    if flops:
        rec["TFLOP_per_s"] = flops / seconds * 1e-12
        if ceiling:
            rec["flop_fraction"] = rec["TFLOP_per_s"] / ceiling
    if nbytes:
        rec["GB_per_s"] = nbytes / seconds * 1e-9
        rec["byte_fraction"] = rec["GB_per_s"] / BANDWIDTH_GBS
    rec.update(extra)
    return rec


class Results:
    """Collects records; rewrites the JSON file (atomically) after every addition. Each record is
    printed with its time in ms, or in us with print_unit="us" (decoding steps)."""

    def __init__(self, path, context, print_unit="ms"):
        assert print_unit in ("ms", "us"), print_unit
        self.path, self.context, self.records, self.print_unit = path, context, [], print_unit

    def add(self, rec):
        self.records.append(rec)
        rates = "".join(f"  {k} {rec[k]:.1f}" for k in ("TFLOP_per_s", "GB_per_s") if k in rec)
        if self.print_unit == "us":
            print(f"{rec['name']:70s} {rec['median_ms'] * 1e3:10.1f} us{rates}", flush=True)
        else:
            print(f"{rec['name']:70s} {rec['median_ms']:10.4f} ms{rates}", flush=True)
        self.save()

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"context": self.context, "benchmarks": self.records}, f, indent=1)
        os.replace(tmp, self.path)


def base_context(script, args, cudnn=False):
    """The JSON file's context: date, host, device and versions (cuDNN's with cudnn=True), the
    run's --quick and --budget, and the lists run_cases fills."""
    import torch
    import triton

    props = torch.cuda.get_device_properties(0)
    context = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host_name": platform.node(),
        "executable": script,
        "device": torch.cuda.get_device_name(),
        "compute_capability": f"{props.major}.{props.minor}",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
    }
    if cudnn:
        context["cudnn_version"] = torch.backends.cudnn.version()
    context.update({
        "triton_version": triton.__version__,
        "quick": args.quick,
        "budget_s": args.budget,
        "skipped": [],
        "errors": [],
    })
    return context


def run_cases(cases, budget_s, results):
    """Runs (label, fn) in order until the time budget is spent; the rest are listed as skipped."""
    import torch

    deadline = time.monotonic() + budget_s
    for label, fn in cases:
        if time.monotonic() > deadline:
            results.context["skipped"].append(label)
            print(f"skipped (time budget): {label}", flush=True)
            continue
        try:
            fn()
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # refused shapes, memory
            msg = f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            results.context["errors"].append(msg)
            print("error:", msg, flush=True)
        torch.cuda.empty_cache()
    results.save()


def mamba_commit():
    """The mamba_ssm commit the Triton ops in .peers/ were extracted from (.peers/MAMBA_COMMIT)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".peers", "MAMBA_COMMIT")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def median_ms(fn):
    """Median of triton.testing.do_bench (L2 flushed before each call) after one warm call, with
    at least ~5 timed calls for the long shapes."""
    import torch
    import triton.testing

    start = time.monotonic()
    fn()
    torch.cuda.synchronize()
    once_ms = (time.monotonic() - start) * 1e3
    return triton.testing.do_bench(fn, warmup=max(25, once_ms), rep=max(200, 5 * once_ms), return_mode="median")
