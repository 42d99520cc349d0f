#!/usr/bin/env python3
"""CPU per complete flow, by process kind: PostgreSQL, Orders, Payments, loadgen.

Runs `loadgen flow --concurrency C --duration D` and reads the CPU time (utime + stime,
from /proc/<pid>/stat) of every process, by name, twice while the flows run: at
`--skip` seconds and `--skip` seconds before the end. The flows completed between the
two readings are the invoices issued between them (counted in the run's Orders
database with psql), so start-up, warm-up and shutdown are left out. PostgreSQL is every process
named `postgres` on the machine (backends, WAL writer, checkpointer...): run it with
nothing else using the server. A backend that starts and ends between the two readings
is missed; the services keep their pool connections, so there are none in practice.

    bench/cpu-per-flow.py [--runs 3] [--concurrency 32] [--duration 30] [--skip 5]

Prints one line per run and the medians, in microseconds of CPU per flow.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("postgres", "orders", "payments", "loadgen")


def cpu_by_kind():
    """Seconds of CPU used so far by every live process, summed by kind."""
    total = dict.fromkeys(KINDS, 0.0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if name in total:
            total[name] += (int(fields[11]) + int(fields[12])) / TICK
    return total


def one_run(args, n):
    out = tempfile.mkdtemp(prefix="cpu-per-flow-")
    report = os.path.join(out, "report.json")
    cmd = [
        os.path.join(ROOT, "target/release/loadgen"), "flow",
        "--concurrency", str(args.concurrency), "--duration", f"{args.duration}s",
        "--out", out, "--json", report,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The flows start about a second after Orders starts: wait for its process.
    deadline = time.monotonic() + 60
    while not any(p for p in os.listdir("/proc") if p.isdigit() and _name(p) == "orders"):
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("loadgen did not start Orders")
        time.sleep(0.1)
    start = time.monotonic()
    time.sleep(args.skip)
    before, n_before, t_before = cpu_by_kind(), invoices(), time.monotonic() - start
    time.sleep(args.duration - 2 * args.skip)
    after, n_after, t_after = cpu_by_kind(), invoices(), time.monotonic() - start
    if proc.wait(timeout=args.duration + 300) != 0:
        sys.exit(f"loadgen flow failed; see {out}")
    flows = n_after - n_before
    used = {k: after[k] - before[k] for k in KINDS}
    per_flow = {k: 1e6 * used[k] / flows for k in KINDS}
    line = ", ".join(f"{k} {per_flow[k]:.0f} µs" for k in KINDS)
    share = used["postgres"] / sum(used.values())
    print(f"run {n}: {flows:.0f} flows in {t_after - t_before:.0f} s; {line}; "
          f"PostgreSQL {100 * share:.0f} % of the CPU used")
    return per_flow, share, flows / (t_after - t_before)


def _name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def invoices():
    """Invoices issued so far in the run's Orders database (loadgen's bench_orders_*)."""
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAX"]
    db = subprocess.run(
        psql + ["-d", "postgres", "-c",
                "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_orders\\_%'"],
        capture_output=True, text=True, check=True).stdout.split()
    if len(db) != 1:
        sys.exit(f"expected one bench_orders_* database, found {db}")
    return int(subprocess.run(psql + ["-d", db[0], "-c", "SELECT count(*) FROM invoices"],
                              capture_output=True, text=True, check=True).stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--skip", type=int, default=5)
    args = p.parse_args()
    runs = [one_run(args, n + 1) for n in range(args.runs)]
    med = {k: statistics.median(r[0][k] for r in runs) for k in KINDS}
    share = statistics.median(r[1] for r in runs)
    rate = statistics.median(r[2] for r in runs)
    print("median: " + ", ".join(f"{k} {med[k]:.0f} µs" for k in KINDS)
          + f" of CPU per flow; PostgreSQL {100 * share:.0f} % of it; {rate:.0f} flows/s")


if __name__ == "__main__":
    main()
