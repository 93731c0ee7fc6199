#!/usr/bin/env python3
"""Core engine vs the tools users use today, side by side in one run.

Rows: promptops get+render T1/T2 (fast path; and `promptops-minijinja`,
the same prompt forced through minijinja) vs raw minijinja (Rust) and Python jinja2 /
minijinja; token counting with promptops (piece cache warm, and `count_uncached`)
vs bpe-openai, tiktoken-rs and Python tiktoken. Each case runs in a fresh process per round, rounds
alternate between languages; the table shows the median over rounds of
each process's median batch (5 batches of ~0.5 s after 0.2 s warm-up,
as in the shared workload's BASELINE.md).

    python3 benches/core_side_by_side.py [--rounds 3] [--render-only]

Needs: a release build of the `timing` binary (built here), and a venv with
tiktoken (created under /var/tmp/promptops-bench-venv if missing).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOAD = os.environ.get("PROMPTOPS_WORKLOAD", os.path.join(ROOT, "..", "shared", "bench-workload"))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/promptops-target")
VENV = os.environ.get("PROMPTOPS_BENCH_VENV", "/var/tmp/promptops-bench-venv")

PY_PEER = r'''
import json, sys, time, os
sys.path.insert(0, %(here)r)
from tiktoken_offline import seed; seed()
import tiktoken
enc_name = sys.argv[1]
corpus = open(os.path.join(%(workload)r, "corpus.txt")).read()
want = json.load(open(os.path.join(%(workload)r, "expected_tokens.json")))[enc_name]
enc = tiktoken.get_encoding(enc_name)
assert len(enc.encode(corpus)) == want
op = lambda: enc.encode(corpus)
t = time.perf_counter()
while time.perf_counter() - t < 0.2: op()
n = 0; t = time.perf_counter()
while time.perf_counter() - t < 0.05: op(); n += 1
per = max(n * 10, 1); rates = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(per): op()
    rates.append(per / (time.perf_counter() - t))
rates.sort()
print(json.dumps({"lang": "python", "library": "tiktoken " + tiktoken.__version__ if hasattr(tiktoken, "__version__") else "tiktoken",
  "case": enc_name + " count", "ops_per_s": rates[2], "min": rates[0], "max": rates[4], "us_per_op": 1e6 / rates[2], "tokens_per_s": rates[2] * want}))
'''


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "tiktoken==0.14.0"], check=True)
    return py


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--render-only", action="store_true", help="only the T1/T2 render rows")
    args = ap.parse_args()
    env = dict(os.environ, PROMPTOPS_WORKLOAD=WORKLOAD, CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "build", "--release", "--workspace", "-q", "--bin", "timing"], cwd=ROOT, env=env, check=True)
    timing = os.path.join(TARGET, "release", "timing")
    py = None if args.render_only else ensure_venv()
    script = PY_PEER % {"here": HERE, "workload": WORKLOAD}
    cases = [
        ([timing, "render", "t1", "promptops"], "render"),
        ([timing, "render", "t1", "promptops-minijinja"], "render"),
        ([timing, "render", "t1", "minijinja"], "render"),
        ([timing, "render", "t2", "promptops"], "render"),
        ([timing, "render", "t2", "promptops-minijinja"], "render"),
        ([timing, "render", "t2", "minijinja"], "render"),
    ]
    for enc in () if args.render_only else ("cl100k_base", "o200k_base"):
        cases += [
            ([timing, "tokens", enc, "promptops"], "tokens"),
            ([timing, "tokens", enc, "promptops-cold"], "tokens"),
            ([timing, "tokens", enc, "bpe-openai"], "tokens"),
            ([timing, "tokens", enc, "tiktoken-rs"], "tokens"),
            ([py, "-c", script, enc], "tokens"),
        ]
    results = {}
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for cmd, _kind in cases:
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results.setdefault((row["lang"], row["library"], row["case"]), []).append(row)
    load1 = os.getloadavg()
    print(f"run started {start}; load average at start {load0[0]:.2f}, at end {load1[0]:.2f}; {args.rounds} rounds\n")
    print("| lang | library | case | ops/s (median of rounds) | µs/op | M tokens/s |")
    print("|---|---|---|---:|---:|---:|")
    med = {}
    for key, rows in results.items():
        ops = statistics.median(r["ops_per_s"] for r in rows)
        tps = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
        med[key] = (ops, statistics.median(tps) if tps else None)
        t = f"{med[key][1] / 1e6:.2f}" if med[key][1] else ""
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ops:,.0f} | {1e6 / ops:.2f} | {t} |")
    print()
    def ratio(a, b):
        return med[a][0] / med[b][0]
    for t in ("T1", "T2"):
        r = ratio(("rust", "promptops", f"{t} get+render"), ("rust", "minijinja", f"{t} get+render"))
        print(f"- {t}: promptops get+render (fast path) runs at {r:.3f}× the speed of raw minijinja render ({(1 / r - 1) * 100:+.1f} % time)")
        r = ratio(("rust", "promptops-minijinja", f"{t} get+render"), ("rust", "minijinja", f"{t} get+render"))
        print(f"- {t}: promptops get+render through minijinja only runs at {r:.3f}× the speed of raw minijinja render")
    for enc in () if args.render_only else ("cl100k_base", "o200k_base"):
        warm = med[("rust", "promptops", f"{enc} count")][0]
        cold = med[("rust", "promptops-cold", f"{enc} count")][0]
        bo = med[("rust", "bpe-openai", f"{enc} count")][0]
        tk = [k for k in med if k[0] == "python" and k[2] == f"{enc} count"][0]
        rs = med[("rust", "tiktoken-rs", f"{enc} count")][0]
        print(f"- {enc}: promptops counting, cache warm / no cache: {warm / med[tk][0]:.2f}× / {cold / med[tk][0]:.2f}× Python tiktoken, "
              f"{warm / rs:.2f}× / {cold / rs:.2f}× tiktoken-rs, {warm / bo:.2f}× / {cold / bo:.2f}× bpe-openai")


if __name__ == "__main__":
    main()
