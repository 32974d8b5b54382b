#!/usr/bin/env python3
"""Issue 3's measurement with each anchor on a machine of its own, emulated: three
`scopekeeper serve` processes, each in a cgroup capped at QUOTA% of one core (as in the scaling
experiment), with no policy, with `open` and with `limits`.

    bench/policy_overhead_capped.py BIN WORKDIR [SECONDS, default 8] [ROUNDS, default 3] [QUOTA, default 50]

bench/policy-overhead.sh measures on `scopekeeper dev`, where the three anchors share one
process and the machine's 2 cores, so every entry's policy evaluation is paid three times out
of the same CPU that serves the writes; here each anchor pays it out of its own budget, as a
deployment does. Each round runs the three variants in a rotated order on fresh clusters; the
table shows each variant's median. Needs root and the cgroup v1 cpu controller.
"""
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import PERIOD_US, Capped, cpu_ticks, quiet, scopekeeper_cluster  # noqa: E402

VARIANTS = ["none", "open", "limits"]
LIMITS_PARAMS = '{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}'


def bench(binary, env, clients, seconds):
    out = quiet([binary, "bench", "--clients", str(clients), "--duration", str(seconds),
                 "--mix", "create=1", "--value-size", "100", "--json"], env)
    if out.returncode != 0:
        raise SystemExit(f"scopekeeper bench failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def settle(capped):
    """Waits until the nodes are idle: two half-seconds in a row costing them at most 3 ticks
    in all, or 60 s. A deploy returns once the leader has committed the policy, and the other
    anchors compile it in the background (seconds of wall time under a cap); unmeasured, that
    compile would count as the policy's cost in the run that follows. Every variant waits alike."""
    total = lambda: sum(cpu_ticks(p.pid) for p in capped.procs)
    last, calm = total(), 0
    for _ in range(120):
        time.sleep(0.5)
        now = total()
        calm = calm + 1 if now - last <= 3 else 0
        if calm >= 2:
            return
        last = now


def main():
    binary, work = sys.argv[1], sys.argv[2]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    quota = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wasm = {}
    for p in ("open", "limits"):
        wasm[p] = os.path.join(work, f"{p}.wasm")
        quiet([binary, "policy", "build", os.path.join(root, "policies", p), "--out", wasm[p]]
              ).check_returncode()
    ops, p50 = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        for k in range(len(VARIANTS)):
            variant = VARIANTS[(round_ + k) % len(VARIANTS)]
            d = os.path.join(work, f"{variant}-{round_}")
            capped = Capped(f"policy-{variant}", quota_us=PERIOD_US * quota // 100)
            try:
                env = scopekeeper_cluster(binary, d, 3, capped)
                if variant != "none":
                    args = [binary, "policy", "deploy", "/", wasm[variant]]
                    if variant == "limits":
                        args += ["--params", LIMITS_PARAMS]
                    quiet(args, env).check_returncode()
                settle(capped)
                many = bench(binary, env, 64, seconds)
                one = bench(binary, env, 1, seconds)
            finally:
                capped.stop()
                shutil.rmtree(d, ignore_errors=True)
            ops[variant].append(many["ops_per_sec"])
            p50[variant].append(one["p50_ms"])
            print(f"round {round_} {variant}: {many['ops_per_sec']:.0f} creates/s at 64 clients,"
                  f" p50 {one['p50_ms']:.3f} ms at 1", file=sys.stderr, flush=True)
    base_ops, base_p50 = statistics.median(ops["none"]), statistics.median(p50["none"])
    print(f"\n{'policy':8} {'64c creates/s':>16} {'vs none':>10} {'1c p50 (ms)':>16} {'added p50 (us)':>14}")
    for v in VARIANTS:
        o, l = statistics.median(ops[v]), statistics.median(p50[v])
        print(f"{v:8} {o:16.0f} {o / base_ops:10.3f} {l:16.3f} {(l - base_p50) * 1000:14.0f}")
    print(f"3 anchors, each its own process capped at {quota}% of one core; {os.cpu_count()} cores;"
          f" medians of {rounds} rounds, each variant on a fresh cluster, in turn")


if __name__ == "__main__":
    main()
