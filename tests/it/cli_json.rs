//! Output for scripts on a real cycle: `events -f --json` and `up --json` print one parseable
//! JSON object per line (NDJSON), and `status` answers as a table and as one JSON object whose
//! figures are the measured ones.

use super::support::*;
use handoffs::server::NatsServer;
use protocol::events::{Event, EventBody};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every line of `text` as a JSON value; fails naming the first line that is not one object.
fn ndjson(text: &str, what: &str) -> Vec<serde_json::Value> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what} line {} is not JSON ({e}): {l}\n{text}", i + 1));
            assert!(v.is_object(), "{what} line {} is not an object: {l}", i + 1);
            v
        })
        .collect()
}

#[test]
fn events_follow_json_and_up_json_print_one_object_per_line_of_a_real_cycle() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let nats = NatsServer::start_in(&tmp.path().join("nats"), "").expect("nats-server (make nats)");
    let plan = write_plan(tmp.path(), "scripts", "", "", "[[prompts]]\nid = \"bye\"\ntext = \"Say goodbye.\"\n");
    let (ev_out, ev_err) = (tmp.path().join("events.out"), tmp.path().join("events.err"));
    let mut follower = threadcycle()
        .args(["events", "-f", "--json", "--nats", &nats.url()])
        .stdout(std::fs::File::create(&ev_out).expect("file"))
        .stderr(std::fs::File::create(&ev_err).expect("file"))
        .stdin(Stdio::null())
        .spawn()
        .expect("run events -f");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&ev_err).unwrap_or_default().contains("following events") {
        assert!(t0.elapsed() < Duration::from_secs(20), "events -f never subscribed");
        assert!(
            follower.try_wait().expect("wait").is_none(),
            "{}",
            std::fs::read_to_string(&ev_err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = tmp.path().join("out");
    let up = threadcycle()
        .args(["up", "--json", "--nats", &nats.url()])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run up");
    assert!(up.status.success(), "{}", show(&up));
    // up --json: the events, then one object saying how it ended.
    let up_lines = ndjson(&String::from_utf8_lossy(&up.stdout), "up --json");
    let last = up_lines.last().expect("up printed something");
    assert_eq!(last["up"], "completed", "{last}");
    let cycle = last["cycle"].as_str().expect("a cycle id").to_string();
    let reports = last["reports"].as_str().expect("the reports folder");
    assert!(std::path::Path::new(reports).join("README.md").is_file(), "{last}");
    for v in &up_lines[..up_lines.len() - 1] {
        serde_json::from_value::<Event>(v.clone()).unwrap_or_else(|e| panic!("not an event ({e}): {v}"));
    }
    // events -f --json saw the same cycle, one event object per line, and keeps following.
    std::thread::sleep(Duration::from_millis(500));
    assert!(follower.try_wait().expect("wait").is_none(), "events -f stopped on its own");
    let _ = follower.kill();
    let _ = follower.wait();
    let text = std::fs::read_to_string(&ev_out).expect("events output");
    let events: Vec<Event> = ndjson(&text, "events -f --json")
        .into_iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an event ({e}): {v}")))
        .collect();
    let ours: Vec<&Event> = events.iter().filter(|e| e.cycle.as_str() == cycle).collect();
    assert!(matches!(ours.first().map(|e| &e.body), Some(EventBody::CycleStarted { requests: 2, .. })), "{text}");
    assert!(matches!(ours.last().map(|e| &e.body), Some(EventBody::CycleCompleted { .. })), "{text}");
    let runs: Vec<f64> = ours
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::RunMeasured { decode_tps, e2e_ms, .. } => {
                assert!(e2e_ms.is_some_and(|ms| ms > 0.0), "{e:?}");
                *decode_tps
            }
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 2, "{text}");
    assert!(
        ours.iter().any(|e| matches!(&e.body, EventBody::Step { step: protocol::events::Step::WeightsPlaced { gpu_share }, .. } if *gpu_share == 0.0)),
        "no GPU here: the weights are placed on the CPU\n{text}"
    );
    // The events are the measured figures: the same decode tokens/s as the results.
    let r = results(&cycle_dir(&out));
    let measured: Vec<f64> = first_model(&r).runs.iter().filter_map(|x| x.client_decode_tps).collect();
    assert_eq!(runs, measured);
    // compare --json: one object, every figure of the cycle against itself unchanged.
    let cmp = threadcycle().args(["compare", &cycle, &cycle, "--json", "--out"]).arg(&out).output().expect("compare");
    assert!(cmp.status.success(), "{}", show(&cmp));
    let lines = ndjson(&String::from_utf8_lossy(&cmp.stdout), "compare --json");
    let figures = lines[0]["figures"].as_array().expect("figures");
    let decode = figures.iter().find(|f| f["figure"] == "Decode tok/s (client)").expect("decode");
    let mean_a = decode["a"].as_f64().expect("a figure");
    assert!((mean_a - measured.iter().sum::<f64>() / measured.len() as f64).abs() < 1e-9, "{decode}");
    assert!(figures.iter().all(|f| f["flag"].is_null()), "{}", lines[0]);
    // status --json: one object on one line, with the mean the table shows. `up` stopped its
    // agents; a Main on the same server answers from the cycle record in NATS.
    let mut main = threadcycle()
        .args(["agent", "main", "--nats", &nats.url(), "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run main");
    let t0 = Instant::now();
    let st = loop {
        let st = threadcycle().args(["status", &cycle, "--json", "--nats", &nats.url()]).output().expect("status");
        if st.status.success() || t0.elapsed() > Duration::from_secs(30) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(st.status.success(), "{}", show(&st));
    let lines = ndjson(&String::from_utf8_lossy(&st.stdout), "status --json");
    assert_eq!(lines.len(), 1);
    let c = &lines[0]["cycles"][0];
    assert_eq!(c["requests_done"], 2, "{c}");
    let mean = measured.iter().sum::<f64>() / measured.len() as f64;
    assert!((c["decode_tps_mean"].as_f64().expect("mean") - mean).abs() < 1e-9, "{c}");
    assert!(c["seconds_left"].is_null(), "a finished cycle has no time left: {c}");
    let table = threadcycle().args(["status", &cycle, "--nats", &nats.url()]).output().expect("status");
    let text = String::from_utf8_lossy(&table.stdout);
    let mut rows = text.lines();
    assert!(rows.next().is_some_and(|h| h.starts_with("CYCLE") && h.contains("PROCESSOR")), "{text}");
    let row = rows.next().expect("a row for the cycle");
    assert!(row.starts_with(&cycle) && row.contains("complete") && row.contains("2/2 req, 1/1 models"), "{text}");
    assert!(row.contains(&format!("{mean:.1}")), "{text}");
    let _ = main.kill();
    let _ = main.wait();
}

#[test]
fn events_without_follow_or_with_a_bad_cycle_is_refused_by_name() {
    let o = threadcycle().args(["events"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("add -f"), "{}", show(&o));
    let o = threadcycle().args(["events", "-f", "no such/cycle"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cycle `no such/cycle`"), "{}", show(&o));
}

#[test]
fn nats_config_json_names_every_file_it_wrote() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("nats");
    let o = threadcycle().args(["nats-config", "--json", "--dir"]).arg(&dir).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    let lines = ndjson(&String::from_utf8_lossy(&o.stdout), "nats-config --json");
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert!(std::path::Path::new(v["config"].as_str().expect("config")).is_file(), "{v}");
    let env = v["env_files"].as_object().expect("env files");
    for role in ["main", "reader", "writer", "debug", "documentation", "operator"] {
        assert!(env.get(role).and_then(|p| p.as_str()).is_some_and(|p| std::path::Path::new(p).is_file()), "{v}");
    }
    assert!(v["tls"].is_null(), "{v}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("NATS_PASSWORD"), "no secret printed");
}
