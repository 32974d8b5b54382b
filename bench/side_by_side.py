#!/usr/bin/env python3
"""Scopekeeper, ZooKeeper 3.8 and etcd 3.4 side by side, in one sitting, through one driver.

    bench/side_by_side.py BIN WORKDIR SECONDS OUT_DIR [ROUNDS]

BIN is a `scopekeeper` built with `--features etcd`. Starts `scopekeeper dev` (3 nodes), a
3-server ZooKeeper ensemble (bench/zookeeper-ensemble.sh) and a 3-member etcd cluster
(bench/etcd-cluster.sh) on loopback, runs every workload against each with
`scopekeeper bench --target ...` in ROUNDS rounds (default 3; each round runs the systems in a
rotated order, and each cell shows the median round), stops them, and writes OUT_DIR/BENCHMARKS.md with the
figures as ratios within this run, plus SVG plots under OUT_DIR/bench/. Called by
bench/benchmarks.sh, which builds BIN first.
"""
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (clients, mix, what the row measures)
WORKLOADS = [
    (1, "create=1", "sequential creates, 1 client"),
    (64, "create=1", "creates, 64 clients"),
    (64, "set=1", "sets, 64 clients"),
    (64, "get=1", "gets, 64 clients"),
    (64, "get=9,set=1", "90/10 get/set, 64 clients"),
    (1, "watch=1", "watch notification, 1 client"),
]
SYSTEMS = ["scopekeeper", "zookeeper", "etcd"]
COLORS = {"scopekeeper": "#1f77b4", "zookeeper": "#d62728", "etcd": "#2ca02c"}
# Scopekeeper again on the workloads that read, with ZooKeeper's read guarantee
# (`--reads sequential`: a read sees what its client has seen, from the connected node's
# replica) instead of linearizable reads: like for like with ZooKeeper.
SEQUENTIAL = "scopekeeper-seq"


def systems_of(mix):
    return SYSTEMS + [SEQUENTIAL] if "get" in mix else SYSTEMS


def start_all(binary, work):
    dev_log = open(os.path.join(work, "dev.log"), "w")
    dev = subprocess.Popen(
        [binary, "dev", "--data", os.path.join(work, "dev"), "--base-port", "17501",
         "--zk-base-port", "0"],
        stdout=dev_log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while "ready in" not in open(os.path.join(work, "dev.log")).read():
        if dev.poll() is not None or time.time() > deadline:
            raise SystemExit("scopekeeper dev did not start; see " + os.path.join(work, "dev.log"))
        time.sleep(0.05)
    zk = subprocess.run(["bash", os.path.join(HERE, "zookeeper-ensemble.sh"), "start",
                         os.path.join(work, "zk")], check=True, capture_output=True, text=True)
    etcd = subprocess.run(["bash", os.path.join(HERE, "etcd-cluster.sh"), "start",
                           os.path.join(work, "etcd")], check=True, capture_output=True, text=True)
    return dev, zk.stdout.strip(), etcd.stdout.strip()


def stop_all(dev, work):
    for script, sub in (("zookeeper-ensemble.sh", "zk"), ("etcd-cluster.sh", "etcd")):
        subprocess.run(["bash", os.path.join(HERE, script), "stop", os.path.join(work, sub)])
    if dev is not None and dev.poll() is None:
        dev.send_signal(2)
        dev.wait(timeout=60)


def run(binary, target, hosts, clients, mix, seconds):
    args = [binary, "bench", "--clients", str(clients), "--mix", mix,
            "--duration", str(seconds), "--value-size", "100", "--json"]
    if target == SEQUENTIAL:
        args += ["--target", "scopekeeper", "--reads", "sequential"]
    else:
        args += ["--target", target]
    if target == "zookeeper":
        args += ["--zk-hosts", hosts]
    if target == "etcd":
        args += ["--etcd-endpoints", hosts]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(runs, clients):
    """The round in the middle: by throughput for many clients, by p50 for one."""
    key = (lambda r: r["p50_ms"]) if clients == 1 else (lambda r: r["ops_per_sec"])
    return sorted(runs, key=key)[len(runs) // 2]


def ratio_range(runs, clients, a, b):
    """min-max over rounds of a's figure against b's in the same round (ops, or p50 for 1)."""
    if clients == 1:
        ratios = [y["p50_ms"] / x["p50_ms"] for x, y in zip(runs[a], runs[b])]
    else:
        ratios = [x["ops_per_sec"] / y["ops_per_sec"] for x, y in zip(runs[a], runs[b])]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def svg_bars(results, path):
    """Throughput per workload (relative to Scopekeeper's), one bar per system."""
    rows = [w for w in WORKLOADS if w[1] != "watch=1"]
    width, height, left, top, bottom = 760, 360, 60, 30, 90
    group = (width - left - 20) / len(rows)
    bar = group / (len(SYSTEMS) + 1)
    peak = max(results[(c, m, s)]["ops_per_sec"] for c, m, _ in rows for s in SYSTEMS)
    scale = (height - top - bottom) / peak
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13">Throughput (ops/s), same machine, same run</text>']
    base = height - bottom
    out.append(f'<line x1="{left}" y1="{base}" x2="{width - 20}" y2="{base}" stroke="black"/>')
    for i, (c, m, label) in enumerate(rows):
        x0 = left + i * group + bar / 2
        for j, system in enumerate(SYSTEMS):
            v = results[(c, m, system)]["ops_per_sec"]
            h = v * scale
            x = x0 + j * bar
            out.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar * 0.9:.1f}" '
                       f'height="{h:.1f}" fill="{COLORS[system]}"><title>{system}: {v:.0f}</title></rect>')
            out.append(f'<text x="{x + bar * 0.45:.1f}" y="{base - h - 3:.1f}" font-size="9" '
                       f'text-anchor="middle">{v / 1000:.1f}k</text>')
        out.append(f'<text x="{x0 + bar * 1.5:.1f}" y="{base + 14}" text-anchor="middle">'
                   f'{label.split(",")[0]}</text>')
        out.append(f'<text x="{x0 + bar * 1.5:.1f}" y="{base + 27}" text-anchor="middle">'
                   f'{c} client{"s" if c > 1 else ""}</text>')
    finish(out, left, height - 30, path)


def svg_latency(results, workload, path):
    """Latency distribution (percentile against ms, log scale) of one workload per system."""
    import math
    c, m, label = workload
    width, height, left, top, bottom = 560, 320, 60, 30, 60
    curves = {s: results[(c, m, s)]["cdf_ms"] for s in SYSTEMS}
    values = [v for cdf in curves.values() for _, v in cdf if v > 0]
    lo, hi = math.log10(min(values)), math.log10(max(values))
    hi = max(hi, lo + 1e-3)
    ps = [p for p, _ in next(iter(curves.values()))]
    xs = {p: left + i * (width - left - 20) / (len(ps) - 1) for i, p in enumerate(ps)}

    def y(v):
        v = max(v, 10 ** lo)
        return top + (hi - math.log10(v)) / (hi - lo) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13">Latency (ms, log scale): {label}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>']
    for p in ps:
        out.append(f'<text x="{xs[p]:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                   f'font-size="9">p{p:g}</text>')
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        if lo <= e <= hi:
            out.append(f'<text x="{left - 4}" y="{y(10 ** e) + 3:.1f}" text-anchor="end">{10 ** e:g}</text>')
            out.append(f'<line x1="{left}" y1="{y(10 ** e):.1f}" x2="{width - 20}" y2="{y(10 ** e):.1f}" '
                       'stroke="#ddd"/>')
    for system, cdf in curves.items():
        points = " ".join(f"{xs[p]:.1f},{y(v):.1f}" for p, v in cdf)
        out.append(f'<polyline points="{points}" fill="none" stroke="{COLORS[system]}" stroke-width="2"/>')
    finish(out, left, height - 28, path)


def finish(out, left, top, path):
    """Adds the legend (one swatch per system at `top`), closes the SVG and writes it."""
    for j, system in enumerate(SYSTEMS):
        out.append(f'<rect x="{left + j * 130}" y="{top}" width="12" height="12" '
                   f'fill="{COLORS[system]}"/><text x="{left + j * 130 + 16}" y="{top + 10}">'
                   f'{system}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB, {platform.system()} {platform.release()}"


def versions(binary):
    zk = "ZooKeeper 3.8 (Debian zookeeper package)"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "zookeeper"],
                             capture_output=True, text=True).stdout
        zk = f"ZooKeeper {out} (Debian)"
    except OSError:
        pass
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    etcd = etcd.splitlines()[0].replace("etcd Version:", "etcd") if etcd else "etcd 3.4"
    sk = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return sk, zk, etcd


def main():
    binary, work, seconds, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    os.environ["SCOPEKEEPER_CONFIG"] = os.path.join(work, "client.toml")
    dev = None
    runs = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        dev, zk_hosts, etcd_hosts = start_all(binary, work)
        hosts = {"scopekeeper": "", SEQUENTIAL: "", "zookeeper": zk_hosts, "etcd": etcd_hosts}
        for round_ in range(rounds):
            for clients, mix, label in WORKLOADS:
                # This machine's speed drifts over minutes: no system always goes first.
                systems = systems_of(mix)
                for k in range(len(systems)):
                    system = systems[(round_ + k) % len(systems)]
                    r = run(binary, system, hosts[system], clients, mix, seconds)
                    runs.setdefault((clients, mix, system), []).append(r)
                    print(f"round {round_} {label:34} {system:12} {r['ops_per_sec']:9.0f}/s"
                          f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                          f"  errors {r['errors']}", flush=True)
    finally:
        stop_all(dev, work)
    results = {k: median_run(v, k[0]) for k, v in runs.items()}

    os.makedirs(os.path.join(out_dir, "bench"), exist_ok=True)
    svg_bars(results, os.path.join(out_dir, "bench", "throughput.svg"))
    svg_latency(results, WORKLOADS[0], os.path.join(out_dir, "bench", "latency-create-1.svg"))
    svg_latency(results, WORKLOADS[4], os.path.join(out_dir, "bench", "latency-mix-64.svg"))
    sk_version, zk_version, etcd_version = versions(binary)

    def cell(r):
        return f"{r['ops_per_sec']:.0f}"

    lines = [
        "# Benchmarks",
        "",
        "Written by `bash bench/benchmarks.sh` (not part of CI); every figure below comes from",
        "one run of it, and comparisons are ratios within that run: this machine is shared and",
        "noisy, so absolute figures drift between runs while ratios hold better.",
        "",
        f"- Run: {started}, {seconds} s per workload, 100-byte values, {rounds} rounds. Each"
        " round runs every workload on each system in turn, the systems in a rotated order;"
        " each cell is the median round of its system (by throughput at 64 clients, by p50 at"
        " 1 client), and the last two columns give the range of the ratio over the rounds"
        " (throughput SK/ZK at 64 clients; p50 ZK/SK at 1 client, so above 1 is SK faster).",
        f"- Machine: {machine()}.",
        f"- Systems, all on loopback on this one machine: {sk_version} (`scopekeeper dev`: 3 nodes"
        f" in one process, one scope); {zk_version}, a 3-server ensemble (bench/zookeeper-ensemble.sh,"
        f" default settings, fsync on); {etcd_version}, a 3-member cluster (bench/etcd-cluster.sh,"
        " default settings).",
        "- Driver: the same `scopekeeper bench` workload code for all three: the native client,"
        " the Rust `zookeeper-client` crate, the `etcd-client` crate. Each client has its own"
        " connection, spread round-robin over the servers (Scopekeeper's clients dial from one"
        " shared UDP socket, `Client::alongside`). A create fails if the key exists"
        " (etcd: a transaction on the key's create revision); reads are linearizable in"
        " Scopekeeper and etcd, sequentially consistent in ZooKeeper; the rows marked \"SK"
        " sequential reads\" run Scopekeeper with ZooKeeper's guarantee (`--reads sequential`:"
        " a read sees everything its client has seen, answered by the connected node's replica)"
        " in the same rounds; the watch figure is from"
        " the write's send to the event on a watcher connected to another server.",
        "",
        "## Throughput and latency",
        "",
        "| workload | Scopekeeper ops/s | ZooKeeper ops/s | etcd ops/s | SK/ZK | SK/etcd | p50 ms SK / ZK / etcd | p99 ms SK / ZK / etcd | rounds vs ZK | rounds vs etcd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, mix, label in WORKLOADS:
        sk, zk, et = (results[(clients, mix, s)] for s in SYSTEMS)
        by_system = {s: runs[(clients, mix, s)] for s in SYSTEMS}
        lines.append(
            f"| {label} | {cell(sk)} | {cell(zk)} | {cell(et)} "
            f"| {sk['ops_per_sec'] / zk['ops_per_sec']:.2f} | {sk['ops_per_sec'] / et['ops_per_sec']:.2f} "
            f"| {sk['p50_ms']:.2f} / {zk['p50_ms']:.2f} / {et['p50_ms']:.2f} "
            f"| {sk['p99_ms']:.2f} / {zk['p99_ms']:.2f} / {et['p99_ms']:.2f} "
            f"| {ratio_range(by_system, clients, 'scopekeeper', 'zookeeper')} "
            f"| {ratio_range(by_system, clients, 'scopekeeper', 'etcd')} |")
    for clients, mix, label in WORKLOADS:
        if SEQUENTIAL not in systems_of(mix):
            continue
        sk, zk, et = (results[(clients, mix, s)] for s in [SEQUENTIAL, "zookeeper", "etcd"])
        by_system = {s: runs[(clients, mix, s)] for s in [SEQUENTIAL, "zookeeper", "etcd"]}
        lines.append(
            f"| {label}, SK sequential reads | {cell(sk)} | {cell(zk)} | {cell(et)} "
            f"| {sk['ops_per_sec'] / zk['ops_per_sec']:.2f} | {sk['ops_per_sec'] / et['ops_per_sec']:.2f} "
            f"| {sk['p50_ms']:.2f} / {zk['p50_ms']:.2f} / {et['p50_ms']:.2f} "
            f"| {sk['p99_ms']:.2f} / {zk['p99_ms']:.2f} / {et['p99_ms']:.2f} "
            f"| {ratio_range(by_system, clients, SEQUENTIAL, 'zookeeper')} "
            f"| {ratio_range(by_system, clients, SEQUENTIAL, 'etcd')} |")
    errors = sum(r["errors"] for v in runs.values() for r in v)
    lines += [
        "",
        f"Errors over all runs: {errors}.",
        "",
        "![throughput](bench/throughput.svg)",
        "",
        "![latency of sequential creates](bench/latency-create-1.svg)",
        "![latency of the 90/10 mix](bench/latency-mix-64.svg)",
        "",
        "## Reproduce",
        "",
        "```sh",
        "bash bench/benchmarks.sh            # this file; 10 s per workload, 3 rounds by default",
        "bash bench/benchmarks.sh 30         # longer runs",
        "```",
        "",
        "It installs what it needs from Debian when missing (zookeeper, etcd-server,",
        "etcd-client, protobuf-compiler), builds `scopekeeper` in release with `--features etcd`",
        "and stops every server it started.",
    ]
    scaling = os.path.join(out_dir, "bench", "scaling.md")
    if os.path.exists(scaling):
        lines += ["", open(scaling).read().rstrip()]
    else:
        lines += ["", "## Scaling with the cluster", "",
                  "Not in this run: `bench/scaling.py` did not write docs/bench/scaling.md."]
    # bench/benchmarks.sh's supplementary run at a lower cap, in the same sitting.
    supplementary = os.path.join(out_dir, "bench", "scaling-10pct.md")
    if os.path.exists(supplementary):
        lines += ["", open(supplementary).read().rstrip()]
    with open(os.path.join(out_dir, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.join(out_dir, 'BENCHMARKS.md')}")


if __name__ == "__main__":
    main()
