#!/usr/bin/env python3
"""bench/policy-paired.sh with each anchor a process of its own: three `scopekeeper serve`
processes (each in a cgroup capped at QUOTA% of one core; 0 leaves them uncapped) instead of
`scopekeeper dev`, where the three anchors share one process, one runtime and one policy
preparer. One cluster serves every run; each pair is two bench runs back to back, each into a
new scope of its own, one without a policy and one with POLICY, in alternating order.

    bench/policy_paired_nodes.py BIN WORKDIR [PAIRS, default 10] [SECONDS, default 5]
        [POLICY open|limits, default limits] [CLIENTS, default 1] [QUOTA, default 0]

Needs root and the cgroup v1 cpu controller (bench/scaling.py's). Prints what
bench/paired_stats.py prints.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import CLOCK_TICKS, PERIOD_US, Capped, cpu_ticks, quiet, scopekeeper_cluster  # noqa: E402

PARAMS = {"open": "", "limits": '{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}'}


def main():
    binary, work = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    policy = sys.argv[5] if len(sys.argv) > 5 else "limits"
    clients = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    quota = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    if policy not in PARAMS:
        raise SystemExit(f"policy must be open or limits, not {policy}")
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    wasm = os.path.join(work, "policy.wasm")
    quiet([binary, "policy", "build", os.path.join(here, "..", "policies", policy), "--out", wasm]
          ).check_returncode()
    runs = os.path.join(work, "runs")
    # cgroup v1: a quota of -1 is no limit.
    capped = Capped("policy-paired", quota_us=PERIOD_US * quota // 100 if quota else -1)
    try:
        env = scopekeeper_cluster(binary, os.path.join(work, "cluster"), 3, capped)
        for pair in range(pairs):
            for k in (0, 1):
                variant = "none" if (pair + k) % 2 == 0 else policy
                args = [binary, "bench", "--clients", str(clients), "--duration", str(seconds),
                        "--mix", "create=1", "--value-size", "100", "--scopes", "1", "--json"]
                if variant != "none":
                    args += ["--scope-policy", wasm]
                    if PARAMS[policy]:
                        args += ["--scope-params", PARAMS[policy]]
                gen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env)
                # As in bench/policy-paired.sh: the CPU window opens once the new scope's
                # placement has settled, when the bench says where its anchors are.
                for line in gen.stderr:
                    if "anchors" in line:
                        break
                before = sum(cpu_ticks(p.pid) for p in capped.procs)
                out, err = gen.communicate()
                after = sum(cpu_ticks(p.pid) for p in capped.procs)
                if gen.returncode != 0:
                    raise SystemExit(f"scopekeeper bench failed:\n{err}")
                with open(runs, "a") as f:
                    f.write(f"{pair} {variant} {out.strip().splitlines()[-1]} {after - before}\n")
    finally:
        capped.stop()
    subprocess.run([sys.executable, os.path.join(here, "paired_stats.py"), runs, policy,
                    str(CLOCK_TICKS), str(clients)], check=True)
    print(f"3 anchors, each a `scopekeeper serve` process"
          + (f" capped at {quota}% of one core" if quota else ", uncapped") + f"; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
