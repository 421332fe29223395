"""Training steps on an idle machine and with another process keeping one core busy.

    python benchmarks/contention.py [--rounds 5] [--only course,lenet5] [--markdown]

A laptop is rarely idle: a browser or a second experiment takes a core. With one of
every core's worth of work taken away, the ideal step takes cores / (cores - 1) of its
idle time (2x on two cores); a library whose threads wait for each other at every
parallel region does far worse. Each round times, for every architecture and library, a
fresh worker process (benchmarks/suite.py's) idle and then next to a process spinning on
the CPU; the report gives the median over rounds and the busy / idle slowdowns.
"""
import argparse
import os
import statistics
import subprocess
import sys

import cnnc
from common import table
from suite import ARCHITECTURES, load_torch, run_worker, selected

LIBRARIES = ("cnnc", "torch channels_last")
CALLS = 20
SPIN = "while True: pass"


class BusyCore:
    """A Python process spinning on the CPU for as long as the with-block lasts."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", SPIN])
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def measure(arch_keys, libraries, rounds, calls):
    """Median seconds per training step, idle and busy, for each architecture and library."""
    times = {(a, lib, load): [] for a in arch_keys for lib in libraries for load in ("idle", "busy")}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds} ...", file=sys.stderr, flush=True)
        order = libraries if round_ % 2 == 0 else libraries[::-1]
        for arch_key in arch_keys:
            for library in order:
                times[arch_key, library, "idle"].append(run_worker(library, arch_key, "train", calls))
                with BusyCore():
                    times[arch_key, library, "busy"].append(
                        run_worker(library, arch_key, "train", calls))
    return {key: statistics.median(t) for key, t in times.items()}


def rows_of(medians, arch_keys, libraries):
    """One table row per architecture: idle and busy ms per library."""
    rows = {}
    for arch_key in arch_keys:
        row = {}
        for library in libraries:
            row[f"{library} idle"] = medians[arch_key, library, "idle"]
            row[f"{library} busy"] = medians[arch_key, library, "busy"]
        rows[f"{ARCHITECTURES[arch_key].name}, train step"] = row
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--calls", type=int, default=CALLS, help="timed steps per worker")
    parser.add_argument("--only", action="append", help="architectures, repeatable or "
                        f"comma-separated: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if cnnc.backend() != "compiled":
        raise SystemExit("cnnc's compiled kernels are not running "
                         "(not built, or CNNC_BACKEND=numpy)")
    arch_keys, torch = selected(args.only), load_torch()
    libraries = LIBRARIES if torch else LIBRARIES[:1]
    print(f"{os.cpu_count()} cores, {cnnc.get_num_threads()} threads per library; busy: one "
          f"other process spinning; median over {args.rounds} rounds of {args.calls} steps")
    if torch is None:
        print("torch is missing (pip install torch): timing cnnc alone")
    medians = measure(arch_keys, libraries, args.rounds, args.calls)
    columns = [f"{lib} {load}" for lib in libraries for load in ("idle", "busy")]
    ratios = [(f"{lib} busy", f"{lib} idle") for lib in libraries]
    print()
    print(table(rows_of(medians, arch_keys, libraries), columns, ratios, args.markdown))


if __name__ == "__main__":
    main()
