//! The usual amenities through the real binary: JSON logs on request, completions and the man
//! page on stdout.

use super::support::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs an agent against a NATS address nobody listens on for a few seconds and returns its
/// stderr: it logs its connection attempts while it waits.
fn agent_log(extra: &[&str], env: Option<(&str, &str)>) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let err = tmp.path().join("agent.err");
    let mut cmd = threadcycle();
    cmd.args(extra)
        .args(["agent", "main", "--nats", "nats://127.0.0.1:1"])
        .env("THREADCYCLE_LOG", "info")
        .env_remove("THREADCYCLE_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("file"));
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the agent");
    let t0 = Instant::now();
    while std::fs::read_to_string(&err).unwrap_or_default().lines().count() < 2
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&err).expect("stderr")
}

fn assert_json_lines(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "too few log lines: {text}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{text}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        let msg = v["fields"]["message"].as_str().unwrap_or_else(|| panic!("no message: {l}"));
        assert!(!msg.is_empty(), "{l}");
    }
}

#[test]
fn agents_log_json_lines_when_asked() {
    let by_env = agent_log(&[], Some(("THREADCYCLE_LOG_FORMAT", "json")));
    assert_json_lines(&by_env);
    assert!(by_env.contains("nats"), "the log is the agent's: {by_env}");
    assert_json_lines(&agent_log(&["--log-json"], None));
    // Without it: text lines, not JSON.
    let text = agent_log(&[], None);
    assert!(text.lines().count() >= 2 && text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()));
    // A format that does not exist is bad input, named.
    let out = threadcycle().env("THREADCYCLE_LOG_FORMAT", "xml").arg("status").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("THREADCYCLE_LOG_FORMAT=`xml`"));
}

#[test]
fn completions_and_man_page_come_from_the_binary() {
    let out = threadcycle().args(["completions", "zsh"]).output().expect("run");
    assert!(out.status.success());
    let zsh = String::from_utf8(out.stdout).expect("utf-8");
    assert!(zsh.starts_with("#compdef threadcycle") && zsh.contains("escalations"), "{zsh}");
    let out = threadcycle().arg("man").output().expect("run");
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(page.contains("\n.TH threadcycle 1") && page.contains(".SH \"THREADCYCLE UP\""));
    let bad = threadcycle().args(["completions", "tcsh"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2), "clap rejects an unknown shell");
}
