//! `threadcycle up` as a service manager: the Writer SIGKILLed mid-benchmark is restarted and the
//! cycle completes with every result once; Ctrl-C (SIGINT) mid-benchmark leaves no engine
//! running, keeps the cycle's NATS store and logs, and writes a partial report of every run
//! measured (`--on-interrupt stop`: none).

use super::background::{Background, agent_log, signal};
use super::cycle_crash::{containers_of, crash_plan};
use super::support::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A `threadcycle up` running in the background, with the folders it keeps its state and
/// writes its reports in.
struct Up {
    run: Background,
    state: PathBuf,
    out: PathBuf,
}

impl std::ops::Deref for Up {
    type Target = Background;
    fn deref(&self) -> &Background {
        &self.run
    }
}

impl std::ops::DerefMut for Up {
    fn deref_mut(&mut self) -> &mut Background {
        &mut self.run
    }
}

impl Up {
    /// `up` on the crash plan in `dir`, once `measured` runs are in, with its Writer's pid and
    /// the engine's.
    fn mid_benchmark(dir: &Path, measured: usize) -> (Up, u32, u32) {
        let mut up = Up::start(dir, &crash_plan(dir));
        up.wait_measured(measured, 240);
        let (writer, engine) = up.writer_and_engine();
        (up, writer, engine)
    }

    fn start(dir: &Path, plan: &Path) -> Up {
        Up::start_with(dir, plan, &[])
    }

    fn start_with(dir: &Path, plan: &Path, args: &[&str]) -> Up {
        let (state, out) = (dir.join("state"), dir.join("out"));
        let mut cmd = threadcycle();
        cmd.arg("up").arg(plan).args(args).arg("--out").arg(&out);
        Up { run: Background::spawn(cmd, &state, &dir.join("up")), state, out }
    }

    /// The Writer's log (every restart appends to it), from the kept state folder.
    fn writer_log(&self) -> String {
        agent_log(&self.state, "writer")
    }

    /// The Writer's pid and the pid of the engine it runs.
    fn writer_and_engine(&self) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(w) = agent_child(self.child.id(), "writer")
                && let Some(e) = engine_of(w)
            {
                return (w, e);
            }
            assert!(Instant::now() < deadline, "no engine found under the Writer:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The parent pid of a process.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The engine (a `llama-server --model … --port …`) the Writer `writer` started.
pub(super) fn engine_of(writer: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?).replace('\0', " ");
        (ppid(pid) == Some(writer) && cmd.contains("--model") && cmd.contains("--port")).then_some(pid)
    })
}

/// Whether a process still runs (a zombie waiting for its reaper does not).
pub(super) fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string)))
        .is_some_and(|state| state != "Z" && state != "X")
}

#[test]
fn the_writer_killed_under_up_mid_benchmark_is_restarted_and_the_cycle_completes_exactly_once() {
    require_parts();
    let _serial = serial();
    let mut s =
        Scenario::new("the_writer_killed_under_up_mid_benchmark_is_restarted_and_the_cycle_completes_exactly_once");
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut up, writer, engine) = Up::mid_benchmark(tmp.path(), 2);
    signal(writer, nix::sys::signal::Signal::SIGKILL);
    s.fault();
    let code = up.wait(420);
    let text = up.output();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the writer agent crashed (signal: 9 (SIGKILL)); restarting it in 1 s"), "{text}");
    assert!(text.contains("last lines of its log") && text.contains("the writer agent restarted (pid"), "{text}");
    let cycle = cycle_dir(&up.out).file_name().expect("cycle").to_string_lossy().to_string();
    s.check_exactly_once(&up.out, &cycle, &["hello", "second", "third"], 2);
    s.note("engines_left", u8::from(running(engine)));
    assert!(!running(engine), "the engine {engine} the killed Writer had started still runs");
    // Completed: nothing is kept.
    let kept: Vec<_> = std::fs::read_dir(up.state.join("threadcycle/up")).expect("state").flatten().collect();
    assert!(kept.is_empty(), "state left after a completed cycle: {kept:?}");
    println!(
        "up supervision: writer SIGKILLed mid-benchmark, restarted 1, cycles completed 1, results 6 each once, {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn ctrl_c_to_up_mid_benchmark_stops_every_engine_and_keeps_the_store() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut up, _, engine) = Up::mid_benchmark(tmp.path(), 1);
    signal(up.child.id(), nix::sys::signal::Signal::SIGINT);
    let code = up.wait(120);
    let text = up.output();
    assert_eq!(code, Some(130), "{text}");
    assert!(!running(engine), "the engine {engine} still runs after Ctrl-C:\n{text}");
    assert!(!text.contains("Disconnected from NATS"), "{text}");
    let started = std::fs::read_to_string(&up.stdout).expect("stdout");
    let cycle = started
        .lines()
        .find_map(|l| l.strip_prefix("cycle ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cycle id in the output:\n{text}"))
        .to_string();
    let kept = up.state.join("threadcycle/up").join(&cycle);
    assert!(text.contains(&format!("kept in {}", kept.display())), "{text}");
    assert!(kept.join("nats/jetstream").is_dir(), "no NATS store kept in {}", kept.display());
    assert!(kept.join("logs/writer.log").is_file(), "no Writer log kept in {}", kept.display());
    // Nothing measured is thrown away: the partial report holds every run measured, says how
    // far the model got, and its path is the last line, as for a completed cycle.
    let readme = PathBuf::from(started.lines().last().unwrap_or_default());
    assert!(readme.ends_with("README.md") && readme.is_file(), "no partial report:\n{text}");
    let r = results(readme.parent().expect("report folder"));
    let m = first_model(&r);
    assert!(!m.runs.is_empty(), "the runs measured before Ctrl-C were dropped: {m:?}");
    let why = format!("{:?}", m.status);
    assert!(why.contains("canceled by the operator after") && why.contains("of 6 measured run(s)"), "{why}");
    assert!(r.aborted.as_deref().is_some_and(|a| a.contains("partial report")), "{:?}", r.aborted);
    let summary = std::fs::read_to_string(&readme).expect("summary");
    assert!(summary.contains("partial report"), "the summary does not say the report is partial:\n{summary}");
}

#[test]
fn ctrl_c_with_on_interrupt_stop_writes_no_report() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = crash_plan(tmp.path());
    let mut up = Up::start_with(tmp.path(), &plan, &["--on-interrupt", "stop"]);
    up.wait_measured(1, 240);
    signal(up.child.id(), nix::sys::signal::Signal::SIGINT);
    let code = up.wait(120);
    let text = up.output();
    assert_eq!(code, Some(130), "{text}");
    assert!(!up.out.exists() || std::fs::read_dir(&up.out).map(|d| d.count() == 0).unwrap_or(true), "{text}");
}

/// The children of `parent`.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|p| ppid(*p) == Some(parent))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn up_killed_mid_benchmark_takes_its_agents_engine_and_nats_server_with_it() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut up, _, engine) = Up::mid_benchmark(tmp.path(), 1);
    let left = children(up.child.id());
    assert_eq!(left.len(), 6, "five agents and nats-server: {left:?}");
    signal(up.child.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = up.child.wait();
    // SIGTERM reaches every agent and the server from the kernel; the Writer stops its engine
    // (an agent not stopped 20 s later exits, a Writer reaping its engines first).
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut running_now: Vec<u32> = Vec::new();
    while Instant::now() < deadline {
        running_now = left.iter().copied().chain([engine]).filter(|p| running(*p)).collect();
        if running_now.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let described: Vec<String> = running_now
        .iter()
        .map(|p| {
            format!(
                "{p} {}",
                String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default())
                    .replace('\0', " ")
            )
        })
        .collect();
    for p in &running_now {
        signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    assert!(running_now.is_empty(), "still running 45 s after up was killed: {described:?}\n{}", up.output());
}

/// The Writer SIGKILLed mid-benchmark and, before `up` restarts it, Ctrl-C: the dead Writer
/// cannot stop its engine; the restarted one (which hands on what is stored for the partial
/// report) or `up` at the end reaps it from the dead Writer's pid file.
#[test]
fn ctrl_c_right_after_the_writer_died_still_stops_its_engine() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut up, writer, engine) = Up::mid_benchmark(tmp.path(), 1);
    signal(writer, nix::sys::signal::Signal::SIGKILL);
    signal(up.child.id(), nix::sys::signal::Signal::SIGINT);
    let code = up.wait(120);
    let text = up.output();
    assert_eq!(code, Some(130), "{text}");
    assert!(!running(engine), "the dead Writer's engine {engine} still runs:\n{text}");
    let writer_log = up.writer_log();
    let by_up = text.contains("stopped 1 engine process(es) left running");
    let by_writer = writer_log.contains("Stopped engines left by an earlier Writer.");
    assert!(by_up || by_writer, "nobody says it stopped the engine:\n{text}\n--- writer log\n{writer_log}");
    println!("writer killed, then Ctrl-C: {}", std::fs::read_to_string(&up.stderr).unwrap_or_default().trim());
}

/// The same with the Docker runtime: the container the dead Writer left is removed by its label.
#[test]
fn ctrl_c_right_after_the_writer_died_removes_its_container() {
    require_parts();
    let docker_ok =
        std::process::Command::new("docker").args(["info"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(docker_ok, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = crash_plan(tmp.path());
    let text = std::fs::read_to_string(&plan).expect("plan").replace(
        "runtime = \"process\"",
        "runtime = \"docker\"\nimage = \"threadcycle/llama-server:test\"\nmemory_limit_gb = 1",
    );
    std::fs::write(&plan, text).expect("write plan");
    let mut up = Up::start(tmp.path(), &plan);
    up.wait_measured(1, 240);
    let cycle = up.cycle();
    assert!(!containers_of(&cycle).is_empty(), "no container of cycle {cycle} runs:\n{}", up.output());
    let writer = agent_child(up.child.id(), "writer").expect("the Writer runs");
    signal(writer, nix::sys::signal::Signal::SIGKILL);
    signal(up.child.id(), nix::sys::signal::Signal::SIGINT);
    let code = up.wait(120);
    let out = up.output();
    assert_eq!(code, Some(130), "{out}");
    let left = containers_of(&cycle);
    assert!(left.is_empty(), "containers of cycle {cycle} left behind: {left:?}\n{out}");
    let by_up = out.contains(&format!("removed 1 container(s) of cycle {cycle} left behind"));
    let writer_log = up.writer_log();
    let by_writer = writer_log.contains("Removed containers left by an earlier Writer.");
    assert!(by_up || by_writer, "nobody says it removed the container:\n{out}\n--- writer log\n{writer_log}");
    println!("docker writer killed, then Ctrl-C: {}", std::fs::read_to_string(&up.stderr).unwrap_or_default().trim());
}
