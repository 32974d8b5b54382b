#!/usr/bin/env python3
"""The figures of bench/policy-paired.sh and bench/policy_paired_nodes.py, from their runs file:
one line per bench run, `PAIR VARIANT JSON_REPORT CPU_TICKS`, two runs per pair (BASE, by
default `none`, and VARIANT). Prints each pair, then the median over the pairs of each pair's
ratio or difference, each with a 95% confidence interval that assumes nothing about how the
pairs are distributed. bench/binary-ab.sh uses it with BASE `old` and VARIANT `new`.

    bench/paired_stats.py RUNS VARIANT CLOCK_TICKS CLIENTS [BASE]
"""
import json
import math
import statistics
import sys


def median(xs, fmt):
    """The median and, with no assumption about the distribution, a 95% confidence interval for
    it: the order statistics k and n-k+1, k the largest with P(Binomial(n, 1/2) < k) <= 2.5%."""
    xs = sorted(xs)
    n, k = len(xs), 0
    while sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= 0.025:
        k += 1
    ci = f" (95% CI {xs[k - 1]:{fmt}} to {xs[n - k]:{fmt}})" if k > 0 else " (too few pairs for a 95% CI)"
    return f"{statistics.median(xs):{fmt}}{ci}"


def main():
    runs, policy, ticks, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    base = sys.argv[5] if len(sys.argv) > 5 else "none"
    pairs = {}
    for line in open(runs):
        pair, variant, rest = line.split(" ", 2)
        report, cpu = rest.rsplit(" ", 1)
        d = json.loads(report)
        pairs.setdefault(pair, {})[variant] = (d["ops_per_sec"], d["p50_ms"] * 1000,
                                               1e6 * int(cpu) / ticks / d["ops"])
    pairs = {k: v for k, v in pairs.items() if base in v and policy in v}
    print(f"{'pair':>4} {'creates/s ' + base:>15} {policy:>8} {'ratio':>6} {'p50 ' + base + ' us':>12} {policy:>8} "
          f"{'added':>6} {'CPU/create ' + base:>16} {policy:>8} {'added':>7}")
    for k, v in pairs.items():
        n, p = v[base], v[policy]
        print(f"{k:>4} {n[0]:15.0f} {p[0]:8.0f} {p[0] / n[0]:6.3f} {n[1]:12.0f} {p[1]:8.0f} {p[1] - n[1]:+6.0f} "
              f"{n[2]:16.1f} {p[2]:8.1f} {p[2] - n[2]:+7.1f}")
    each = lambda f: [f(v[base], v[policy]) for v in pairs.values()]
    print(f"median over {len(pairs)} pairs at {clients} clients: throughput "
          f"{median(each(lambda n, p: p[0] / n[0]), '.3f')} of {base}; p50 added "
          f"{median(each(lambda n, p: p[1] - n[1]), '+.0f')} us; node CPU per create added "
          f"{median(each(lambda n, p: p[2] - n[2]), '+.1f')} us (all three anchors)")


if __name__ == "__main__":
    main()
