"""Decode latency of ``vaekit serve``: real HTTP requests to a real server process, one at a time
(as the page sends them), timed from request to full answer.

    python benchmarks/serve_latency.py runs/mnist [--requests 200] [--data-dir DIR]

Prints, per endpoint, the median, 90th percentile and max in milliseconds over the requests
(and the spread, since this machine's speed drifts), and writes bench_serve.json beside it.
Target: <= 50 ms per decode for the MNIST presets on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--data-dir")
    ap.add_argument("--out", default="bench_serve.json")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "vaekit", "serve", args.run_dir, "--port", "0"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        print(line, proc.stderr.read(), file=sys.stderr)
        return 1
    url = line.split()[2]
    startup = time.perf_counter() - t0
    try:
        info = json.loads(urllib.request.urlopen(url + "api/runs", timeout=60).read())[0]
        rng = random.Random(0)
        n_ex, dim = info["examples"], info["latent_dim"]
        cases = {
            "decode_map (hover on the map)": lambda: _post(url + "api/0/decode_map",
                                                           {"u": rng.uniform(-3, 3), "v": rng.uniform(-3, 3)}),
            "decode (a slider moved)": lambda: _post(url + "api/0/decode",
                                                     {"code": [rng.gauss(0, 1) for _ in range(dim)]}),
            "example (a map click)": lambda: _post(url + "api/0/example", {"index": rng.randrange(n_ex)}),
            "interpolate (8 steps)": lambda: _post(url + "api/0/interpolate",
                                                   {"a": rng.randrange(n_ex), "b": rng.randrange(n_ex), "steps": 8}),
            "samples (16)": lambda: _post(url + "api/0/samples", {"n": 16, "seed": rng.randrange(10**6)}),
        }
        for call in cases.values():  # warm up every path once
            call()
        results = {}
        for name, call in cases.items():
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            results[name] = {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * len(times)) - 1],
                             "max_ms": times[-1], "min_ms": times[0], "requests": len(times)}
            r = results[name]
            print(f"{name:<32} median {r['median_ms']:6.1f} ms   p90 {r['p90_ms']:6.1f}   "
                  f"min {r['min_ms']:5.1f}   max {r['max_ms']:6.1f}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    out = {"run": str(Path(args.run_dir).resolve().name), "model": info["model"], "latent_dim": info["latent_dim"],
           "server_start_seconds": startup, "endpoints": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"server ready after {startup:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
