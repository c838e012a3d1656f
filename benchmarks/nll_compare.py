"""The test negative ELBO of several NLL-benchmark runs against their training minutes, in one figure.

Each run folder's history.jsonl gives its test -ELBO per epoch and each epoch's training seconds, so
the curves show what each idea (a hierarchy, the IWAE bound, the VampPrior) buys per minute of this
machine. The runs are those ``nll.py --out DIR`` left behind:

    python benchmarks/nll_compare.py "VampPrior=runs/bench-vamp30" "IWAE K=5=runs/bench-iwae30" \\
        --out docs/img/nll-compare.png
"""

from __future__ import annotations

import argparse

from vaekit.checkpoint import read_history
from vaekit.plots import compare_curves, save_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="a label and a run folder")
    ap.add_argument("--out", default="nll-compare.png", help="PNG to write (default nll-compare.png)")
    args = ap.parse_args()
    histories = {}
    for item in args.runs:
        name, sep, run = item.rpartition("=")
        if not sep or not name:
            raise SystemExit(f"nll_compare.py: '{item}': give NAME=RUN_DIR")
        histories[name] = read_history(run)
        if not histories[name]:
            raise SystemExit(f"nll_compare.py: {run}: no history.jsonl (not a trained run folder)")
    print(f"wrote {save_figure(compare_curves(histories), args.out)}")


if __name__ == "__main__":
    main()
