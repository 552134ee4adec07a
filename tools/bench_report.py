#!/usr/bin/env python3
"""Runs the scan-versus-attention suite (bench/scan_vs_attention.cpp) and writes, into one folder
(default out/bench/): the Google Benchmark JSON, a Markdown report (tables, crossover length, ratio at
64K tokens, date, machine, command) and plots in SVG and PNG (gnuplot): log-log forward time against
length with the crossover marked, forward peak memory, decode latency and decode memory against context.

  tools/bench_report.py --short     # under a minute: a few lengths, 1 thread; prints the Markdown table
  tools/bench_report.py --full      # 256 … 1M tokens, contexts 1K … 256K, 1 and 2 threads (long)

Needs python3 (standard library only) and gnuplot (Debian: gnuplot-nox). Pass --bench to point at the
benchmark binary if it is not in build/bench/ or $SSM_BUILD_DIR/bench/.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_bench(explicit):
    candidates = [explicit] if explicit else []
    if os.environ.get("SSM_BUILD_DIR"):
        candidates.append(os.path.join(os.environ["SSM_BUILD_DIR"], "bench", "bench_scan_vs_attention"))
    candidates.append(os.path.join(ROOT, "build", "bench", "bench_scan_vs_attention"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit("bench_report: bench_scan_vs_attention not found (tried %s); build it "
             "(cmake --build build --target bench_scan_vs_attention) or pass --bench" % ", ".join(candidates))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse(json_path):
    """Returns {kind: {(mixer, threads): [(x, row), …]}} with kind in forward, decode, scan_throughput."""
    with open(json_path) as f:
        data = json.load(f)
    out = {"forward": {}, "decode": {}, "scan_throughput": {}}
    for b in data["benchmarks"]:
        parts = b["name"].split("/")
        kind, mixer = parts[0], parts[1]
        fields = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        threads = int(fields.get("threads", 1))
        x = int(fields.get("l", fields.get("ctx", 0)))
        row = {"error": b.get("error_message") if b.get("error_occurred") else None, "label": b.get("label", "")}
        for key in ("seconds", "peak_rss_MB", "workspace_MB", "state_MB", "state_updates_per_s",
                    "machine_limit", "exp2_rate", "fma_rate", "frac_of_limit", "l"):
            if key in b:
                row[key] = b[key]
        out.setdefault(kind, {}).setdefault((mixer, threads), []).append((x, row))
    for kind in out:
        for key in out[kind]:
            out[kind][key].sort(key=lambda e: e[0])
    return data.get("context", {}), out


def is_scan_side(mixer):
    return not mixer.startswith("attention")


def measured(points):
    return {x: r for x, r in points if not r["error"]}


def crossover(scan_pts, attn_pts):
    """First length where attention is slower than the scan mixer, interpolated in log-log; (value, text)."""
    s, a = measured(scan_pts), measured(attn_pts)
    common = sorted(set(s) & set(a))
    if not common:
        return None, "no common measured length"
    prev = None
    for x in common:
        r = math.log(a[x]["seconds"] / s[x]["seconds"])
        if r > 0:
            if prev is None:
                return x, "attention already slower at the smallest length (%d)" % x
            x0, r0 = prev
            lx = math.log(x0) + (0 - r0) / (r - r0) * (math.log(x) - math.log(x0))
            return math.exp(lx), "≈ %d tokens (interpolated between %d and %d)" % (round(math.exp(lx)), x0, x)
        prev = (x, r)
    return None, "none up to %d tokens (the scan mixer stays slower where both were measured)" % common[-1]


def fmt_time(sec):
    if sec is None:
        return "—"
    if sec >= 1:
        return "%.2f s" % sec
    if sec >= 1e-3:
        return "%.2f ms" % (sec * 1e3)
    return "%.1f µs" % (sec * 1e6)


def fmt_mb(mb):
    if mb is None or mb < 0:
        return "—"
    return "%.0f MB" % mb if mb >= 10 else "%.2f MB" % mb


def short_error(err):
    return "stopped" if err.startswith("stopped") else "error"


def markdown(ctx, res, meta):
    lines = []
    lines.append("## Scan vs attention (%s mode)" % meta["mode"])
    lines.append("")
    load = meta.get("load")
    load_text = ("1-minute load average %.2f before the run and %.2f after it (the suite's own threads count in the "
                 "second)" % (load["before"], load["after"]) if load else "load during the run not recorded")
    lines.append("Measured %s on %s (%s hardware threads), command `%s`; %s." % (
        meta["date"], meta["cpu"], ctx.get("ssm_hardware_threads", "?"), meta["command"], load_text))
    lines.append("d_model 768, 12 heads of 64 (ssm::MultiHeadAttention); Mamba block d_state 16, expand 2; f32, "
                 "batch 1. Entries: %s. Memory: %s." % (ctx.get("ssm_entries", "?"), ctx.get("ssm_memory_method", "?")))
    lines.append("")
    fwd = res["forward"]
    threads = sorted({t for (_, t) in fwd})
    mixers = sorted({m for (m, _) in fwd}, key=lambda m: (not is_scan_side(m), m))
    for t in threads:
        lengths = sorted({x for (m, tt), pts in fwd.items() if tt == t for x, _ in pts})
        lines.append("### Forward time / peak memory against length, %d thread%s" % (t, "s" if t > 1 else ""))
        lines.append("")
        lines.append("| l | " + " | ".join(mixers) + " |")
        lines.append("|---:|" + "---:|" * len(mixers))
        for x in lengths:
            cells = []
            for m in mixers:
                r = dict(fwd.get((m, t), [])).get(x)
                if r is None:
                    cells.append("")
                elif r["error"]:
                    cells.append(short_error(r["error"]))
                else:
                    cells.append("%s / %s" % (fmt_time(r["seconds"]), fmt_mb(r.get("peak_rss_MB"))))
            lines.append("| %d | %s |" % (x, " | ".join(cells)))
        lines.append("")
        for m in mixers:
            for x, r in fwd.get((m, t), []):
                if r["error"]:
                    lines.append("- %s: %s" % (m, r["error"]))
                    break
        for sm in [m for m in mixers if is_scan_side(m) and (m, t) in fwd]:
            for a in [m for m in mixers if not is_scan_side(m) and (m, t) in fwd]:
                _, text = crossover(fwd[(sm, t)], fwd[(a, t)])
                lines.append("- crossover, %s faster than %s: %s" % (sm, a, text))
                s64, a64 = measured(fwd[(sm, t)]).get(65536), measured(fwd[(a, t)]).get(65536)
                if s64 and a64:
                    lines.append("- at 64K tokens %s takes %.1f× the time of %s" % (a, a64["seconds"] / s64["seconds"], sm))
                elif 65536 in lengths:
                    lines.append("- at 64K tokens: %s / %s not measured (a curve stopped earlier)" % (a, sm))
        if 65536 not in lengths:
            lines.append("- the time ratio at 64K tokens is measured by the full mode (tools/bench_report.py --full)")
        lines.append("")
    dec = res["decode"]
    for t in sorted({t for (_, t) in dec}):
        dm = sorted({m for (m, tt) in dec if tt == t}, key=lambda m: (not is_scan_side(m), m))
        ctxs = sorted({x for (m, tt), pts in dec.items() if tt == t for x, _ in pts})
        lines.append("### Decode: per-token latency / state memory against context, %d thread%s" % (t, "s" if t > 1 else ""))
        lines.append("")
        lines.append("| context | " + " | ".join(dm) + " |")
        lines.append("|---:|" + "---:|" * len(dm))
        for x in ctxs:
            cells = []
            for m in dm:
                r = dict(dec.get((m, t), [])).get(x)
                if r is None:
                    cells.append("")
                elif r["error"]:
                    cells.append(short_error(r["error"]))
                else:
                    cells.append("%s / %s" % (fmt_time(r["seconds"]), fmt_mb(r.get("state_MB"))))
            lines.append("| %d | %s |" % (x, " | ".join(cells)))
        lines.append("")
    sc = res.get("scan_throughput", {})
    if sc:
        lines.append("### Selective-scan state updates against the machine limit")
        lines.append("")
        lines.append("The limit is the one bench_selective_scan reports (`machine_limit`, bench/machine_limit.hpp): a state "
                     "update needs one exp and three FMAs, so one core can do at most 1 / (1/E + 3/F) updates/s, with "
                     "E the measured vector exp2 evaluations/s and F the measured lane-FMAs/s of one core (CPU time, "
                     "best of 3, at start-up); a run on t threads is compared with t times that.")
        lines.append("")
        lines.append("| entry | threads | l | state updates/s | limit per core (updates/s) | E (exp2/s) | F (FMA/s) | fraction of limit |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for (m, t), pts in sorted(sc.items()):
            for _, r in pts:
                if r["error"] or "frac_of_limit" not in r:  # an error, or a JSON from before the shared limit
                    continue
                entry = "%s (%s)" % (m, r["label"]) if r.get("label") else m
                lines.append("| %s | %d | %d | %.3g | %.3g | %.3g | %.3g | %.1f%% |" % (
                    entry, t, r.get("l", 0), r["state_updates_per_s"], r["machine_limit"], r["exp2_rate"],
                    r["fma_rate"], 100 * r["frac_of_limit"]))
        lines.append("")
    return "\n".join(lines)


def write_dat(path, points, key):
    with open(path, "w") as f:
        for x, r in points:
            if not r["error"] and r.get(key) is not None and r[key] > 0:
                f.write("%d %.9g\n" % (x, r[key]))


def plot(folder, res, gnuplot):
    fwd, dec = res["forward"], res["decode"]
    scripts = []

    def series(kind_res, key, prefix):
        items = []
        for (m, t), pts in sorted(kind_res.items(), key=lambda e: (not is_scan_side(e[0][0]), e[0])):
            name = "%s_%s_t%d_%s.dat" % (prefix, m, t, key)
            write_dat(os.path.join(folder, name), pts, key)
            if os.path.getsize(os.path.join(folder, name)) > 0:
                items.append((name, "%s, %d thr" % (m.replace("_", " "), t), m))
        return items

    # A colour and point type per mixer, the same in every plot (gnuplot's default cycle repeats after 8, so two
    # curves of 13 shared a colour); attention's curves dashed.
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]
    order = sorted({m for (m, _) in list(fwd) + list(dec)}, key=lambda m: (not is_scan_side(m), m))

    def style(m):
        i = order.index(m)
        return "lc rgb '%s' pt %d dt %d" % (palette[i % len(palette)], 4 + 2 * (i % 6), 1 if is_scan_side(m) else 2)

    def script(out, title, xlabel, ylabel, items, extra=""):
        if not items:  # nothing measured for this plot (e.g. a filtered run)
            return ""
        plots = ", ".join("'%s' using 1:2 with linespoints lw 2 %s title '%s'" % (n, style(mixer), t)
                          for n, t, mixer in items)
        body = ("unset arrow\nunset label\nset title '%s'\nset xlabel '%s'\nset ylabel '%s'\nset logscale xy\nset grid\n"
                "set key outside right top\nset format x '%%.0s%%c'\nset format y '%%g'\n%s\nplot %s\n" % (title, xlabel, ylabel, extra, plots))
        return ("set terminal svg size 1100,600 dynamic font 'Sans,12'\nset output '%s.svg'\n%s"
                "set terminal pngcairo size 1100,600 font 'Sans,11'\nset output '%s.png'\nreplot\n" % (out, body, out))

    # crossover marks (first scan-side mixer vs each attention algorithm, per thread count)
    marks = []
    for t in sorted({t for (_, t) in fwd}):
        # the Mamba block's crossover when it ran (the suite's reference SSM), else the first scan-side mixer's
        scan = sorted((m for (m, tt) in fwd if tt == t and is_scan_side(m)), key=lambda m: (m != "mamba_block", m))
        for a in sorted({m for (m, tt) in fwd if tt == t and not is_scan_side(m)}):
            if scan:
                x, _ = crossover(fwd[(scan[0], t)], fwd[(a, t)])
                if x:
                    marks.append((x, "%s vs %s, %d thr: %.0f" % (scan[0].replace("_", " "), a.replace("_", " "), t, x)))
    extra = ""
    for x, label in marks:
        extra += ("set arrow from %g, graph 0 to %g, graph 1 nohead dt 2 lc rgb 'gray40'\n"
                  "set label '%s' at %g, graph 0.03 rotate by 90 left font ',9' tc rgb 'gray30'\n"
                  % (x, x, "crossover " + label, x * 1.05))
    scripts.append(script("forward_time", "Mixer forward time against sequence length (crossover dashed)",
                          "sequence length l (tokens)", "seconds per forward", series(fwd, "seconds", "fwd"), extra))
    scripts.append(script("forward_memory", "Mixer forward peak memory (resident-set growth)",
                          "sequence length l (tokens)", "MB", series(fwd, "peak_rss_MB", "fwd")))
    scripts.append(script("decode_latency", "Per-token decode latency against context",
                          "context (tokens)", "seconds per token", series(dec, "seconds", "dec")))
    scripts.append(script("decode_memory", "Decode state memory against context (KV cache vs recurrent state)",
                          "context (tokens)", "MB", series(dec, "state_MB", "dec")))
    path = os.path.join(folder, "plots.gp")
    with open(path, "w") as f:
        f.write("\n".join(scripts))
    subprocess.run([gnuplot, "plots.gp"], cwd=folder, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help="quick run for the README demo (default)")
    mode.add_argument("--full", action="store_true", help="the full measurement (long)")
    ap.add_argument("--bench", help="path of bench_scan_vs_attention")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench"), help="output folder (default out/bench)")
    ap.add_argument("--from-json", help="skip running: make the report from an existing JSON file")
    ap.add_argument("bench_args", nargs="*", help="extra arguments for the benchmark (after --)")
    args = ap.parse_args()
    m = "full" if args.full else "short"
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "bench.json")
    command = " ".join(["tools/bench_report.py", "--" + m] + (["--"] + args.bench_args if args.bench_args else []))
    if args.from_json:
        shutil.copyfile(args.from_json, json_path) if os.path.abspath(args.from_json) != json_path else None
    else:
        bench = find_bench(args.bench)
        cmd = [bench, "--ssm_mode=" + m, "--benchmark_out=" + json_path, "--benchmark_out_format=json"] + args.bench_args
        print("bench_report: running %s" % " ".join(cmd), file=sys.stderr)
        before = os.getloadavg()[0]
        with open(os.path.join(args.out, "bench.log"), "w") as log:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # other processes' load changes timings: recorded next to the JSON and quoted in the report
            with open(os.path.join(args.out, "load.json"), "w") as f:
                json.dump({"before": before, "after": os.getloadavg()[0], "command": command, "cpu": cpu_model()}, f)
            log.write(proc.stdout)
            sys.stderr.write(proc.stdout)
            if proc.returncode != 0:
                sys.exit("bench_report: the benchmark failed (exit %d)" % proc.returncode)
    ctx, res = parse(json_path)
    load_path = os.path.join(os.path.dirname(os.path.abspath(args.from_json)) if args.from_json else args.out, "load.json")
    load = None
    if os.path.isfile(load_path):
        with open(load_path) as f:
            load = json.load(f)
    # the measurement's own date (Google Benchmark's context), not the time the report was made
    # Redrawn from a JSON: the command and machine that measured it (kept in load.json), not those redrawing it.
    cpu = cpu_model()
    if args.from_json:
        recorded = load or {}
        command = recorded.get("command") or "tools/bench_report.py --%s (its arguments not recorded)" % ctx.get(
            "ssm_mode", m)
        cpu = recorded.get("cpu") or "not recorded (redrawn on %s)" % cpu
    meta = {"mode": ctx.get("ssm_mode", m), "date": ctx.get("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")), "cpu": cpu,
            "command": command, "load": load}
    md = markdown(ctx, res, meta)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n\nPlots: forward_time.svg, forward_memory.svg, decode_latency.svg, decode_memory.svg (and .png)\n")
    gnuplot = shutil.which("gnuplot")
    if gnuplot:
        plot(args.out, res, gnuplot)
    else:
        print("bench_report: gnuplot not found (Debian package gnuplot-nox): no plots written", file=sys.stderr)
    print(md)
    print("\nbench_report: wrote %s (bench.json, results.md, *.svg, *.png)" % args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
