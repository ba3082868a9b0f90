//! `threadcycle status` as a table, the way `ollama ps` and `docker compose ps` show what runs:
//! one row per model being measured (or per cycle when none is), then the agents.

use crate::display::clean;
use chrono::{DateTime, Utc};
use protocol::events::processor;
use protocol::operator::{AgentLiveness, CycleRecord, CycleState};

/// Seconds as `ollama ps` writes durations: `45s`, `3m05s`, `1h02m`.
pub use protocol::events::duration_text as duration;

/// Left-aligned columns two spaces apart; widths in characters.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..n).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn state_word(s: &CycleState) -> String {
    match s {
        CycleState::Running { phase } => format!("{phase:?}").to_lowercase(),
        CycleState::Completed => "completed".into(),
        CycleState::Failed { .. } => "failed".into(),
        CycleState::Canceled => "canceled".into(),
    }
}

/// The cycles table: CYCLE, PHASE, MODEL, HOST, PROCESSOR, TOK/S, PROGRESS, LEFT.
pub fn cycles_table(cycles: &[CycleRecord], now: DateTime<Utc>) -> String {
    if cycles.is_empty() {
        return "no cycles\n".into();
    }
    let dash = || "—".to_string();
    let mut rows = vec![
        ["CYCLE", "PLAN", "PHASE", "MODEL", "HOST", "PROCESSOR", "TOK/S", "PROGRESS", "LEFT"]
            .map(String::from)
            .to_vec(),
    ];
    let mut notes = Vec::new();
    for c in cycles {
        let progress =
            format!("{}/{} req, {}/{} models", c.requests_done, c.requests_total, c.models_done, c.models_total);
        let left = c.seconds_left(now).map(duration).unwrap_or_else(dash);
        let common = |model: String, host: String, proc_: String, tps: Option<f64>| {
            vec![
                c.id.clone(),
                clean(&c.plan),
                state_word(&c.state),
                model,
                host,
                proc_,
                tps.map(|t| format!("{t:.1}")).unwrap_or_else(dash),
                progress.clone(),
                left.clone(),
            ]
        };
        if c.running.is_empty() {
            let host = if c.hosts.is_empty() { c.host.clone() } else { c.hosts.join(",") };
            rows.push(common(dash(), clean(&host), dash(), c.decode_tps_mean()));
        }
        for r in &c.running {
            let model = if r.of > 0 { format!("{} ({}/{})", r.model, r.index, r.of) } else { r.model.clone() };
            let model = if r.attempt > 1 { format!("{model} try {}", r.attempt) } else { model };
            let proc_ = r.gpu_share.map(processor).unwrap_or_else(dash);
            rows.push(common(clean(&model), clean(&r.host), proc_, r.decode_tps.or(c.decode_tps_mean())));
            if let Some(p) = &r.pull {
                notes.push(format!("{}: {}: {}", c.id, clean(&r.model), clean(&p.text())));
            }
            if let Some(t) = &r.tuning {
                notes.push(format!(
                    "{}: {}: {} ({} trial(s) ended so far)",
                    c.id,
                    clean(&r.model),
                    clean(&t.text()),
                    r.trials_done
                ));
            }
        }
        if let CycleState::Failed { reason } = &c.state {
            notes.push(format!("{}: failed: {}", c.id, clean(reason)));
        }
        if let Some(d) = &c.report_dir {
            notes.push(format!("{}: reports in {}", c.id, clean(d)));
        }
    }
    let mut out = columns(&rows);
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// The agents table: AGENT, HEALTH, LAST HEARTBEAT, PID.
pub fn agents_table(agents: &[AgentLiveness]) -> String {
    if agents.is_empty() {
        return String::new();
    }
    let mut rows = vec![["AGENT", "HEALTH", "LAST HEARTBEAT", "PID"].map(String::from).to_vec()];
    for a in agents {
        let health = if a.age_s > 20.0 { "STALE" } else { "alive" };
        rows.push(vec![clean(&a.agent), health.into(), format!("{} ago", duration(a.age_s)), a.pid.to_string()]);
    }
    columns(&rows)
}

/// The status reply as one JSON object: Main's records, each cycle with the figures the table
/// derives (`decode_tps_mean`, `seconds_left`) added.
pub fn status_json(cycles: &[CycleRecord], agents: &[AgentLiveness], now: DateTime<Utc>) -> serde_json::Value {
    let cycles: Vec<serde_json::Value> = cycles
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("decode_tps_mean".into(), serde_json::json!(c.decode_tps_mean()));
                o.insert("seconds_left".into(), serde_json::json!(c.seconds_left(now)));
            }
            v
        })
        .collect();
    serde_json::json!({ "reply": "status", "cycles": cycles, "agents": agents })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::{Event, EventBody, Phase, Step};
    use protocol::{CycleId, Role};

    fn record(now: DateTime<Utc>) -> CycleRecord {
        serde_json::from_value(serde_json::json!({
            "id": "20261130-1200-ab12", "plan": "demo", "plan_source": "plans/demo.toml", "plan_hash": "",
            "host": "local", "state": {"state": "running", "phase": "planned"},
            "started_at": now - chrono::Duration::seconds(100), "updated_at": now,
            "models_total": 2, "models_done": 0, "requests_done": 0, "requests_total": 4,
            "report_dir": null, "report_files": []
        }))
        .expect("a cycle record")
    }

    fn ev(body: EventBody) -> Event {
        Event::new(CycleId::parse("20261130-1200-ab12").expect("id"), Role::Writer, body)
    }

    #[test]
    fn the_table_shows_the_running_model_its_split_speed_and_time_left() {
        let now = Utc::now();
        let mut c = record(now);
        assert!(c.apply(&ev(EventBody::PhaseStarted { phase: Phase::Benchmarking })));
        c.apply(&ev(EventBody::ModelStarted { model: "gemma".into(), index: 1, of: 2, attempt: 1 }));
        c.apply(&ev(EventBody::Step { model: "gemma".into(), step: Step::WeightsPlaced { gpu_share: 0.58 } }));
        for (repetition, tps) in [(1, 40.0), (2, 50.0)] {
            c.apply(&ev(EventBody::RunMeasured {
                model: "gemma".into(),
                prompt: "p".into(),
                repetition,
                ttft_ms: 10.0,
                tokens: 12,
                decode_tps: Some(tps),
                e2e_ms: None,
                tpot_ms: None,
                prompt_tokens: None,
                prefill_tps: None,
                sample: None,
            }));
        }
        // 2 of 4 requests in 100 s (the record's start): 100 s left.
        c.started_at = now - chrono::Duration::seconds(100);
        let t = cycles_table(&[c.clone()], now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        let head: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(head, ["CYCLE", "PLAN", "PHASE", "MODEL", "HOST", "PROCESSOR", "TOK/S", "PROGRESS", "LEFT"]);
        // Columns line up: every cell starts where its heading does.
        for h in ["MODEL", "PROCESSOR", "TOK/S", "LEFT"] {
            let at = lines[0].find(h).expect("heading");
            assert_ne!(&lines[1][at..at + 1], " ", "{h} misaligned:\n{t}");
        }
        assert!(lines[1].contains("benchmarking"), "{t}");
        assert!(lines[1].contains("gemma (1/2)"), "{t}");
        assert!(lines[1].contains("42%/58% CPU/GPU"), "{t}");
        assert!(lines[1].contains("45.0"), "{t}");
        assert!(lines[1].contains("2/4 req, 0/2 models"), "{t}");
        assert!(lines[1].trim_end().ends_with("1m40s"), "{t}");
        assert_eq!(c.tokens_done, 24);
        // The model's turn ends: no running row, the cycle's mean stays.
        c.apply(&ev(EventBody::ModelFinished { model: "gemma".into(), outcome: "measured".into() }));
        let t = cycles_table(&[c.clone()], now);
        assert!(t.lines().nth(1).is_some_and(|l| l.contains(" — ") && l.contains("45.0")), "{t}");
        let j = status_json(&[c], &[], now);
        assert_eq!(j["cycles"][0]["decode_tps_mean"], 45.0);
        assert_eq!(j["cycles"][0]["seconds_left"], 100.0);
        assert_eq!(j["cycles"][0]["models_done"], 1);
    }

    #[test]
    fn a_tuning_search_under_way_shows_its_latest_trial_until_it_ends() {
        let now = Utc::now();
        let mut c = record(now);
        c.apply(&ev(EventBody::ModelStarted { model: "gemma".into(), index: 1, of: 2, attempt: 1 }));
        let trial = |number: u32, stage: &str| Step::TuneTrial {
            number,
            max_trials: 6,
            stage: stage.into(),
            config: format!("GPU layers default, threads {number}, batch 512, KV default"),
        };
        let done = |number: u32, tps: f64| Step::TuneTrialDone {
            number,
            verdict: "measured".into(),
            decode_tps: Some(tps),
            ttft_ms: Some(120.4),
        };
        for step in [trial(1, "baseline"), done(1, 50.0), trial(2, "threads")] {
            assert!(c.apply(&ev(EventBody::Step { model: "gemma".into(), step })));
        }
        let t = cycles_table(&[c.clone()], now);
        assert!(
            t.contains(
                "20261130-1200-ab12: gemma: tuning: trial 2 (threads; at most 6 measured): GPU layers default, threads 2, batch 512, KV default (1 trial(s) ended so far)"
            ),
            "{t}"
        );
        c.apply(&ev(EventBody::Step { model: "gemma".into(), step: done(2, 55.25) }));
        let t = cycles_table(&[c.clone()], now);
        assert!(
            t.contains("gemma: tuning: trial 2 measured: 55.2 tok/s decode, TTFT 120 ms (2 trial(s) ended so far)"),
            "{t}"
        );
        let j = status_json(&[c.clone()], &[], now);
        assert_eq!(j["cycles"][0]["running"][0]["trials_done"], 2, "{j}");
        c.apply(&ev(EventBody::Step {
            model: "gemma".into(),
            step: Step::TuneDone { outcome: "Baseline kept".into() },
        }));
        assert!(!cycles_table(&[c], now).contains("tuning"));
    }

    #[test]
    fn a_model_cut_short_and_measured_on_after_a_resume_counts_once() {
        let mut c = record(Utc::now());
        for outcome in ["skipped: canceled with a partial report", "measured"] {
            c.apply(&ev(EventBody::ModelFinished { model: "gemma".into(), outcome: outcome.into() }));
        }
        assert_eq!(c.models_done, 1, "{c:?}");
        c.apply(&ev(EventBody::ModelFinished { model: "qwen".into(), outcome: "measured".into() }));
        assert_eq!(c.models_done, 2, "{c:?}");
        // A run measured again (a retry under changed settings) counts once.
        let run = |rep: u32| EventBody::RunMeasured {
            model: "gemma".into(),
            prompt: "hello".into(),
            repetition: rep,
            ttft_ms: 10.0,
            tokens: 12,
            decode_tps: Some(40.0),
            e2e_ms: None,
            tpot_ms: None,
            prompt_tokens: None,
            prefill_tps: None,
            sample: None,
        };
        for rep in [1, 2, 1] {
            c.apply(&ev(run(rep)));
        }
        assert_eq!((c.requests_done, c.tokens_done, c.decode_runs), (2, 24, 2), "{c:?}");
        assert!(cycles_table(&[c], Utc::now()).contains("2/4 req, 2/2 models"));
    }

    #[test]
    fn a_pull_under_way_shows_under_the_table_until_it_ends() {
        let now = Utc::now();
        let mut c = record(now);
        c.apply(&ev(EventBody::ModelStarted { model: "big".into(), index: 1, of: 1, attempt: 1 }));
        let pulling = Step::Pulling {
            model: "llama3.1:70b".into(),
            digest: None,
            completed: Some(1_200_000_000),
            total: Some(4_100_000_000),
            rate_bps: Some(35_200_000.0),
        };
        assert!(c.apply(&ev(EventBody::Step { model: "big".into(), step: pulling })));
        let t = cycles_table(&[c.clone()], now);
        assert!(
            t.lines()
                .any(|l| l
                    == "20261130-1200-ab12: big: pulling llama3.1:70b: 1.2 GB of 4.1 GB (29%), 35.2 MB/s, 1m22s left"),
            "{t}"
        );
        c.apply(&ev(EventBody::Step {
            model: "big".into(),
            step: Step::Pulled { model: "llama3.1:70b".into(), bytes: 4_100_000_000, seconds: 120.0 },
        }));
        assert!(!cycles_table(&[c], now).contains("pulling"));
    }

    #[test]
    fn model_text_is_shown_not_obeyed_in_the_table() {
        let now = Utc::now();
        let mut c = record(now);
        c.apply(&ev(EventBody::ModelStarted { model: "x\u{1b}[2J".into(), index: 1, of: 1, attempt: 2 }));
        let t = cycles_table(&[c], now);
        assert!(t.contains("x␛[2J (1/1) try 2") && !t.contains('\u{1b}'), "{t}");
    }

    #[test]
    fn durations_read_like_ollama_ps() {
        assert_eq!(duration(45.2), "45s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(processor(1.0), "100% GPU");
        assert_eq!(processor(0.0), "100% CPU");
    }

    #[test]
    fn agents_table_marks_stale_agents() {
        let a = |agent: &str, age_s: f64| AgentLiveness { agent: agent.into(), last_seen: Utc::now(), age_s, pid: 7 };
        let t = agents_table(&[a("main", 1.0), a("writer-gpu2", 65.0)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["AGENT", "HEALTH", "LAST", "HEARTBEAT", "PID"]);
        assert!(lines[1].contains("alive") && lines[1].contains("1s ago"), "{t}");
        assert!(lines[2].contains("STALE") && lines[2].contains("1m05s ago"), "{t}");
    }
}
