//! A real Prometheus (Debian's `prometheus` package) scrapes `threadcycle metrics` while a real
//! demo-model cycle runs; PromQL over its HTTP API returns the figures the cycle's results hold,
//! and every metric the Grafana dashboard in deploy/ queries is one that scrape has.

use super::support::*;
use handoffs::server::NatsServer;
use protocol::events::{Event, EventBody, LiveSample, Step};
use protocol::{CycleId, Role};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Kills a child process when dropped (the test's exporter and Prometheus).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET path` over HTTP/1.0; the body of a 200 answer, or None.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant PromQL query: each result's labels and value.
fn query(prom: &str, q: &str) -> Vec<(serde_json::Value, f64)> {
    let Some(body) = http_get(prom, &format!("/api/v1/query?query={}", encode(q))) else { return Vec::new() };
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus answered {body}: {e}"));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let value = r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
                    (r["metric"].clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The single value of `q` once `ok` holds for it (a scrape may predate the last event),
/// waiting up to `limit`; fails with the last answer.
fn value_when(prom: &str, q: &str, limit: Duration, ok: impl Fn(f64) -> bool) -> f64 {
    let t0 = Instant::now();
    loop {
        let r = query(prom, q);
        if let [(_, v)] = r.as_slice()
            && ok(*v)
        {
            return *v;
        }
        assert!(t0.elapsed() < limit, "PromQL `{q}` gave {r:?} after {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `q` reaches exactly `want` within `limit`.
fn value_is(prom: &str, q: &str, limit: Duration, want: f64) {
    value_when(prom, q, limit, |v| v == want);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Prometheus, or a failure naming what to install.
fn require_prometheus() {
    let found = std::env::split_paths(&path_env()).any(|d| d.join("prometheus").is_file());
    assert!(found, "prometheus is not installed: `apt-get install -y prometheus` (`make prereqs-test` does it)");
}

/// Every query in the dashboard (panel expressions and the variable's query) and every
/// `threadcycle_*` name in them.
fn dashboard_queries(dashboard: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    fn walk(v: &serde_json::Value, exprs: &mut Vec<String>, all: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if let ("expr", serde_json::Value::String(e)) = (k.as_str(), x) {
                        exprs.push(e.clone());
                    }
                    walk(x, exprs, all);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, exprs, all)),
            serde_json::Value::String(s) => all.push(s.clone()),
            _ => {}
        }
    }
    let (mut exprs, mut all) = (Vec::new(), Vec::new());
    walk(dashboard, &mut exprs, &mut all);
    assert!(!exprs.is_empty(), "the dashboard has no expressions");
    let mut names: Vec<String> = Vec::new();
    for e in &all {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("threadcycle_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    (exprs, names)
}

/// The series names an exposition declares with `# TYPE` (counters with `_total`, histograms
/// with `_bucket`, `_sum` and `_count`).
fn served_names(exposition: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut w = line.split_whitespace();
        let (Some(name), Some(kind)) = (w.next(), w.next()) else { continue };
        match kind {
            "counter" => out.push(format!("{name}_total")),
            "histogram" => out.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
            _ => out.push(name.to_string()),
        }
    }
    out
}

/// Events for the cycle `synthetic` that a CPU-only demo cycle never sends.
fn other_cycle_events() -> Vec<Event> {
    let cycle = CycleId::parse("synthetic").expect("id");
    let ev = |from, body| Event::new(cycle.clone(), from, body);
    let sample = LiveSample {
        gpu_temp_c: Some(61.0),
        gpu_util_pct: Some(97.0),
        gpu_power_w: Some(250.0),
        vram_used_bytes: Some(8 << 30),
        // The demo's runs can end before the sampler's first engine reading.
        engine_cpu_pct: Some(180.0),
        ..Default::default()
    };
    vec![
        ev(Role::Main, EventBody::CycleStarted { plan: "gpu".into(), models: 1, requests: 1 }),
        ev(
            Role::Writer,
            EventBody::Step {
                model: "big".into(),
                step: Step::Pulling {
                    model: "big:70b".into(),
                    digest: None,
                    completed: Some(500_000_000),
                    total: Some(1_000_000_000),
                    rate_bps: Some(5e7),
                },
            },
        ),
        ev(
            Role::Writer,
            EventBody::Step {
                model: "big".into(),
                step: Step::ImagePulling {
                    image: "ollama/ollama:0.12.6".into(),
                    completed: Some(1),
                    total: Some(2),
                    rate_bps: Some(1.0),
                },
            },
        ),
        ev(
            Role::Writer,
            EventBody::RunMeasured {
                model: "big".into(),
                prompt: "p".into(),
                repetition: 1,
                ttft_ms: 900.0,
                tokens: 100,
                decode_tps: Some(12.0),
                e2e_ms: Some(9000.0),
                tpot_ms: Some(81.0),
                prompt_tokens: Some(50),
                prefill_tps: Some(300.0),
                sample: Some(sample),
            },
        ),
        ev(
            Role::Debug,
            EventBody::EscalationOpened {
                id: "e1".into(),
                model: "big".into(),
                diagnosis: "oom".into(),
                awaiting_operator: true,
            },
        ),
        ev(
            Role::Writer,
            EventBody::DeadLetter { subject: "tc.handoff.writer.main.synthetic".into(), reason: "bad".into() },
        ),
        ev(Role::Main, EventBody::AgentSilent { agent: "writer".into(), silent_s: 60, limit_s: 600 }),
    ]
}

/// Publishes events as the agents do, on their subjects.
fn publish_events(url: &str, events: &[Event]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        for e in events {
            let bytes = serde_json::to_vec(e).expect("encode");
            client.publish(protocol::subjects::event(&e.cycle, e.from), bytes.into()).await.expect("publish");
        }
        client.flush().await.expect("flush");
    });
}

#[test]
fn a_real_prometheus_scrapes_a_real_cycle_and_promql_returns_the_measured_figures() {
    require_parts();
    require_prometheus();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let nats = NatsServer::start_in(&tmp.path().join("nats"), "").expect("nats-server (make nats)");
    // The exporter, fed over NATS, on a free port it prints.
    let mut exporter = Reaped(
        threadcycle()
            .args(["metrics", "--listen", "127.0.0.1:0", "--json", "--nats", &nats.url()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run threadcycle metrics"),
    );
    let mut first = String::new();
    std::io::BufReader::new(exporter.0.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    let url: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let url = url["metrics"].as_str().expect("the metrics URL").to_string();
    let target = url.trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    assert!(http_get(&target, "/metrics").is_some(), "{url} does not answer");
    // Prometheus scraping it every second.
    let prom = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: threadcycle\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("config");
    let log = std::fs::File::create(tmp.path().join("prometheus.log")).expect("log");
    let _prometheus = Reaped(
        std::process::Command::new("prometheus")
            .env("PATH", path_env())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run prometheus"),
    );
    value_is(&prom, "up{job=\"threadcycle\"}", Duration::from_secs(60), 1.0);
    // A real cycle: the demo model, two prompts.
    let plan = write_plan(tmp.path(), "scraped", "", "", "[[prompts]]\nid = \"bye\"\ntext = \"Say goodbye.\"\n");
    let out = tmp.path().join("out");
    let up = threadcycle()
        .args(["up", "--json", "--metrics-listen", "off", "--nats", &nats.url()])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run up");
    assert!(up.status.success(), "{}", show(&up));
    let stdout = String::from_utf8_lossy(&up.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("last line");
    let cycle = last["cycle"].as_str().expect("cycle").to_string();
    let r = results(&cycle_dir(&out));
    let runs = &first_model(&r).runs;
    assert_eq!(runs.len(), 2);
    let sel = format!("{{cycle=\"{cycle}\"}}");
    let wait = Duration::from_secs(30);
    // Per-model request count, tokens, and the phase.
    value_is(&prom, &format!("threadcycle_requests_total{sel}"), wait, 2.0);
    let tokens: u32 = runs.iter().map(|x| x.output_tokens).sum();
    value_is(&prom, &format!("threadcycle_output_tokens_total{sel}"), wait, f64::from(tokens));
    let phase = format!("threadcycle_cycle_phase{{cycle=\"{cycle}\",phase=\"complete\"}}");
    value_is(&prom, &phase, wait, 1.0);
    // Decode tokens/s: the histogram's sum over its count is the results' mean, exactly.
    let decode: Vec<f64> = runs.iter().filter_map(|x| x.client_decode_tps).collect();
    let mean = decode.iter().sum::<f64>() / decode.len() as f64;
    let q = format!("threadcycle_decode_tokens_per_second_sum{sel} / threadcycle_decode_tokens_per_second_count{sel}");
    assert!(mean > 0.0, "{decode:?}");
    value_when(&prom, &q, wait, |v| close(v, mean));
    // TTFT and end-to-end latency, seconds.
    let ttft: f64 = runs.iter().map(|x| x.ttft_ms / 1000.0).sum();
    value_when(&prom, &format!("threadcycle_ttft_seconds_sum{sel}"), wait, |v| close(v, ttft));
    value_is(&prom, &format!("threadcycle_request_duration_seconds_count{sel}"), wait, 2.0);
    let e2e_max = runs.iter().map(|x| x.e2e_ms / 1000.0).fold(0.0, f64::max);
    let q = format!("histogram_quantile(1, sum by (le) (threadcycle_request_duration_seconds_bucket{sel}))");
    // The histogram's top quantile is the upper bound of the bucket holding the slowest request.
    value_when(&prom, &q, wait, |v| v >= e2e_max);
    // Where the weights were (no GPU here) and the sampler's engine memory.
    value_is(&prom, &format!("threadcycle_model_gpu_share{sel}"), wait, 0.0);
    value_when(&prom, &format!("threadcycle_engine_memory_bytes{sel}"), wait, |v| v > 1e6);
    // Main answered while the cycle ran, and the agents' heartbeats were seen.
    value_is(&prom, "max_over_time(threadcycle_main_up[10m])", wait, 1.0);
    value_when(&prom, "count(max_over_time(threadcycle_agent_heartbeat_age_seconds[10m]))", wait, |n| n >= 5.0);
    value_is(&prom, "max_over_time(threadcycle_escalations_waiting[10m])", wait, 0.0);
    // Every edge of the cycle carried its package, as the server counts them on the stream and
    // Main reports them. `up` stopped its agents with the cycle, so the last packages may have
    // come after Main's last answer: a long-running Main (as under compose) reports them all.
    let main_again = Reaped(
        threadcycle()
            .args(["agent", "main", "--nats", &nats.url(), "--out"])
            .arg(tmp.path().join("out-main"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run Main"),
    );
    for (from, to) in [("main", "reader"), ("reader", "writer"), ("writer", "documentation"), ("documentation", "main")]
    {
        let q = format!("threadcycle_handoff_packages{{from=\"{from}\",to=\"{to}\"}}");
        value_is(&prom, &q, Duration::from_secs(60), 1.0);
    }
    drop(main_again);
    // What this host's cycle cannot show (a GPU, pulls, an escalation, a dead letter, a silent
    // agent) arrives as the typed events the agents publish, for another cycle id; its figures
    // come out of Prometheus as they went in.
    publish_events(&nats.url(), &other_cycle_events());
    let other = "{cycle=\"synthetic\"}";
    value_is(&prom, &format!("threadcycle_gpu_power_watts{other}"), wait, 250.0);
    let pull = "threadcycle_pull_rate_bytes_per_second{cycle=\"synthetic\",kind=\"model\"}";
    value_is(&prom, pull, wait, 5e7);
    value_is(&prom, "sum(threadcycle_dead_letters_total)", wait, 1.0);
    value_is(&prom, "sum(threadcycle_agent_silent_total)", wait, 1.0);
    value_is(&prom, &format!("threadcycle_escalations_opened_total{other}"), wait, 1.0);
    // The dashboard asks only for names the exporter serves, every name reached Prometheus, and
    // every expression is valid PromQL.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/threadcycle.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
    let (exprs, names) = dashboard_queries(&dashboard);
    // A gauge without a series is declared by no scrape (time left appears once Main's next
    // answer, polled every 2 s, says the cycle ended): scrape until every name is there, or 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (served, missing) = loop {
        let served = served_names(&http_get(&target, "/metrics").expect("a scrape"));
        let missing: Vec<&String> = names.iter().filter(|n| !served.contains(n)).collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (served, missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let stored = http_get(&prom, "/api/v1/label/__name__/values").expect("names");
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the exporter does not serve: {missing:?}\nserved: {served:?}"
    );
    for n in ["threadcycle_decode_tokens_per_second_sum", "threadcycle_requests_total", "threadcycle_cycle_phase"] {
        assert!(stored.contains(&format!("\"{n}\"")), "{n} not stored by Prometheus: {stored}");
        assert!(names.iter().any(|x| x == n), "the dashboard does not show {n}");
    }
    for e in exprs {
        let q = e.replace("$cycle", ".*");
        let body = http_get(&prom, &format!("/api/v1/query?query={}", encode(&q)));
        assert!(body.is_some_and(|b| b.contains("\"status\":\"success\"")), "Prometheus refuses the dashboard's `{e}`");
    }
}
