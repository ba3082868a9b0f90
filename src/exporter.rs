//! The Prometheus exporter: one `/metrics` endpoint fed over NATS, run by `threadcycle metrics`
//! (its own service in docker-compose.yml) and inside `threadcycle up`.
//!
//! It needs nothing but the operator's NATS user: the typed events on `tc.evt.>` (phase, runs
//! with their latencies and tokens/s and the sampler's latest figures, pulls, escalations, dead
//! letters, silent agents) and Main's answers to `status` and `escalations` (heartbeats,
//! escalations waiting, time left). Every metric is named `threadcycle_*`; [`METRIC_NAMES`] lists
//! them (the Grafana dashboard's test checks its expressions against a real scrape).

use crate::client::request;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::events::{Event, EventBody, LiveSample, Phase, Step};
use protocol::operator::{OperatorReply, OperatorRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 2 min.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18))
}

fn rate_histogram() -> Histogram {
    // 0.5 to about 16,000 tokens/s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.5, 2.0, 16))
}

const PHASES: [Phase; 5] = [Phase::Planned, Phase::Verifying, Phase::Benchmarking, Phase::Documenting, Phase::Complete];

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Planned => "planned",
        Phase::Verifying => "verifying",
        Phase::Benchmarking => "benchmarking",
        Phase::Documenting => "documenting",
        Phase::Complete => "complete",
    }
}

/// Every metric family the exporter serves, as Prometheus names its series (counters with
/// `_total`, histograms with `_bucket`/`_sum`/`_count`).
#[cfg(test)]
pub const METRIC_NAMES: &[&str] = &[
    "threadcycle_cycle_phase",
    "threadcycle_cycle_requests_planned",
    "threadcycle_cycle_requests_measured",
    "threadcycle_cycle_models_planned",
    "threadcycle_cycle_models_finished",
    "threadcycle_cycle_seconds_left",
    "threadcycle_requests_total",
    "threadcycle_output_tokens_total",
    "threadcycle_ttft_seconds",
    "threadcycle_inter_token_seconds",
    "threadcycle_request_duration_seconds",
    "threadcycle_decode_tokens_per_second",
    "threadcycle_prefill_tokens_per_second",
    "threadcycle_model_gpu_share",
    "threadcycle_gpu_temperature_celsius",
    "threadcycle_gpu_utilization_percent",
    "threadcycle_gpu_power_watts",
    "threadcycle_gpu_memory_used_bytes",
    "threadcycle_engine_memory_bytes",
    "threadcycle_engine_cpu_percent",
    "threadcycle_host_memory_available_bytes",
    "threadcycle_pull_completed_bytes",
    "threadcycle_pull_total_bytes",
    "threadcycle_pull_rate_bytes_per_second",
    "threadcycle_escalations_opened_total",
    "threadcycle_escalations_waiting",
    "threadcycle_agent_heartbeat_age_seconds",
    "threadcycle_main_up",
    "threadcycle_handoff_packages",
    "threadcycle_dead_letters_total",
    "threadcycle_duplicates_ignored_total",
    "threadcycle_agent_silent_total",
    "threadcycle_events_total",
];

/// The metrics and their registry.
pub struct Metrics {
    registry: Registry,
    phase: Family<Labels, Gauge>,
    requests_planned: Family<Labels, Gauge>,
    requests_measured: Family<Labels, Gauge>,
    models_planned: Family<Labels, Gauge>,
    models_finished: Family<Labels, Gauge>,
    seconds_left: Family<Labels, GaugeF>,
    requests: Family<Labels, Counter>,
    output_tokens: Family<Labels, Counter>,
    ttft: Hist,
    inter_token: Hist,
    duration: Hist,
    decode: Hist,
    prefill: Hist,
    gpu_share: Family<Labels, GaugeF>,
    gpu_temp: Family<Labels, GaugeF>,
    gpu_util: Family<Labels, GaugeF>,
    gpu_power: Family<Labels, GaugeF>,
    vram: Family<Labels, GaugeF>,
    engine_mem: Family<Labels, GaugeF>,
    engine_cpu: Family<Labels, GaugeF>,
    host_mem: Family<Labels, GaugeF>,
    pull_done: Family<Labels, GaugeF>,
    pull_total: Family<Labels, GaugeF>,
    pull_rate: Family<Labels, GaugeF>,
    escalations_opened: Family<Labels, Counter>,
    escalations_waiting: Gauge,
    heartbeat_age: Family<Labels, GaugeF>,
    main_up: Gauge,
    handoffs: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Counter>,
    duplicates: Counter,
    agent_silent: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered (help texts are what `/metrics` shows).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("threadcycle");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let hist = || Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let rates = || Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(rate_histogram);
        Metrics {
            phase: reg!("cycle_phase", "1 for the cycle's current phase, 0 for the others", Family::default()),
            requests_planned: reg!("cycle_requests_planned", "Measured requests the plan asks for", Family::default()),
            requests_measured: reg!("cycle_requests_measured", "Requests measured so far", Family::default()),
            models_planned: reg!("cycle_models_planned", "Models in the plan", Family::default()),
            models_finished: reg!("cycle_models_finished", "Models whose turn is over", Family::default()),
            seconds_left: reg!(
                "cycle_seconds_left",
                "Seconds left at the pace so far (Main's estimate)",
                Family::default()
            ),
            requests: reg!("requests", "Measured requests per model", Family::default()),
            output_tokens: reg!("output_tokens", "Output tokens of measured requests per model", Family::default()),
            ttft: reg!("ttft_seconds", "Time to first token (client side)", hist()),
            inter_token: reg!("inter_token_seconds", "Time per output token after the first (client side)", hist()),
            duration: reg!("request_duration_seconds", "End-to-end request latency (client side)", hist()),
            decode: reg!("decode_tokens_per_second", "Client decode tokens/s per request", rates()),
            prefill: reg!("prefill_tokens_per_second", "Prefill tokens/s the engine reports per request", rates()),
            gpu_share: reg!("model_gpu_share", "Share of the model's weights in VRAM (0 to 1)", Family::default()),
            gpu_temp: reg!("gpu_temperature_celsius", "Hottest GPU (sampler)", Family::default()),
            gpu_util: reg!("gpu_utilization_percent", "GPU utilisation, mean over GPUs (sampler)", Family::default()),
            gpu_power: reg!("gpu_power_watts", "Power of all GPUs (sampler)", Family::default()),
            vram: reg!("gpu_memory_used_bytes", "VRAM used on all GPUs (sampler)", Family::default()),
            engine_mem: reg!(
                "engine_memory_bytes",
                "Engine process RSS or container working set (sampler)",
                Family::default()
            ),
            engine_cpu: reg!("engine_cpu_percent", "Engine CPU, % of one core (sampler)", Family::default()),
            host_mem: reg!("host_memory_available_bytes", "Host memory available (sampler)", Family::default()),
            pull_done: reg!("pull_completed_bytes", "Bytes of the pull (model or image) done", Family::default()),
            pull_total: reg!("pull_total_bytes", "Bytes of the pull in all", Family::default()),
            pull_rate: reg!("pull_rate_bytes_per_second", "Pull rate since it began", Family::default()),
            escalations_opened: reg!("escalations_opened", "Escalations Debug opened", Family::default()),
            escalations_waiting: reg!("escalations_waiting", "Escalations waiting for the operator", Gauge::default()),
            heartbeat_age: reg!(
                "agent_heartbeat_age_seconds",
                "Seconds since each agent's last heartbeat, as Main saw it",
                Family::default()
            ),
            main_up: reg!("main_up", "1 when Main answered the last status request", Gauge::default()),
            handoffs: reg!(
                "handoff_packages",
                "Handoff packages on the stream per edge (from, to), as Main counts them",
                Family::default()
            ),
            dead_letters: reg!("dead_letters", "Packages set aside on the dead-letter stream", Family::default()),
            duplicates: reg!("duplicates_ignored", "Packages delivered again and ignored", Counter::default()),
            agent_silent: reg!("agent_silent", "Times Main's watchdog found an agent silent", Family::default()),
            events: reg!("events", "Events seen, by sender and kind", Family::default()),
            registry: r,
        }
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            tracing::warn!(message = "Metrics not encoded.", error = %e);
        }
        s
    }

    fn sample(&self, l: &Labels, s: &LiveSample) {
        let set = |f: &Family<Labels, GaugeF>, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                f.get_or_create(l).set(v);
            }
        };
        set(&self.gpu_temp, s.gpu_temp_c);
        set(&self.gpu_util, s.gpu_util_pct);
        set(&self.gpu_power, s.gpu_power_w);
        set(&self.vram, s.vram_used_bytes.map(|b| b as f64));
        set(&self.engine_mem, s.engine_mem_bytes.map(|b| b as f64));
        set(&self.engine_cpu, s.engine_cpu_pct);
        set(&self.host_mem, s.host_mem_available_bytes.map(|b| b as f64));
    }

    fn pull(&self, l: &Labels, done: Option<u64>, total: Option<u64>, rate: Option<f64>) {
        if let Some(d) = done {
            self.pull_done.get_or_create(l).set(d as f64);
        }
        if let Some(t) = total {
            self.pull_total.get_or_create(l).set(t as f64);
        }
        if let Some(r) = rate.filter(|r| r.is_finite()) {
            self.pull_rate.get_or_create(l).set(r);
        }
    }

    /// Folds one event into the metrics.
    pub fn event(&self, ev: &Event) {
        let cycle = ev.cycle.as_str();
        let kind = serde_json::to_value(&ev.body)
            .ok()
            .and_then(|v| v.get("event").and_then(|k| k.as_str()).map(String::from))
            .unwrap_or_default();
        self.events.get_or_create(&labels(&[("from", ev.from.as_str()), ("event", &kind)])).inc();
        let c = labels(&[("cycle", cycle)]);
        let set_phase = |now: Phase| {
            for p in PHASES {
                let l = labels(&[("cycle", cycle), ("phase", phase_name(p))]);
                self.phase.get_or_create(&l).set(i64::from(p == now));
            }
        };
        match &ev.body {
            EventBody::CycleStarted { models, requests, .. } => {
                set_phase(Phase::Planned);
                self.requests_planned.get_or_create(&c).set(i64::from(*requests));
                self.models_planned.get_or_create(&c).set(i64::from(*models));
                self.requests_measured.get_or_create(&c).set(0);
                self.models_finished.get_or_create(&c).set(0);
            }
            EventBody::PhaseStarted { phase } => set_phase(*phase),
            EventBody::CycleCompleted { .. } => {
                set_phase(Phase::Complete);
                // Nothing left to run (Main's next answer, if any, says the same).
                self.seconds_left.get_or_create(&c).set(0.0);
            }
            EventBody::CycleFailed { .. } | EventBody::CycleCanceled => {
                self.seconds_left.get_or_create(&c).set(0.0);
            }
            EventBody::ModelFinished { .. } => {
                self.models_finished.get_or_create(&c).inc();
            }
            EventBody::RunMeasured {
                model, ttft_ms, tokens, decode_tps, e2e_ms, tpot_ms, prefill_tps, sample, ..
            } => {
                let l = labels(&[("cycle", cycle), ("model", model)]);
                self.requests_measured.get_or_create(&c).inc();
                self.requests.get_or_create(&l).inc();
                self.output_tokens.get_or_create(&l).inc_by(u64::from(*tokens));
                let observe = |h: &Hist, v: Option<f64>| {
                    if let Some(v) = v.filter(|v| v.is_finite() && *v >= 0.0) {
                        h.get_or_create(&l).observe(v);
                    }
                };
                observe(&self.ttft, Some(ttft_ms / 1000.0));
                observe(&self.inter_token, tpot_ms.map(|ms| ms / 1000.0));
                observe(&self.duration, e2e_ms.map(|ms| ms / 1000.0));
                observe(&self.decode, *decode_tps);
                observe(&self.prefill, *prefill_tps);
                if let Some(s) = sample {
                    self.sample(&l, s);
                }
            }
            EventBody::Step { model, step } => match step {
                Step::WeightsPlaced { gpu_share } => {
                    self.gpu_share.get_or_create(&labels(&[("cycle", cycle), ("model", model)])).set(*gpu_share);
                }
                Step::Pulling { model: what, completed, total, rate_bps, .. } => {
                    let l = labels(&[("cycle", cycle), ("kind", "model"), ("name", what)]);
                    self.pull(&l, *completed, *total, *rate_bps);
                }
                Step::Pulled { model: what, bytes, .. } => {
                    let l = labels(&[("cycle", cycle), ("kind", "model"), ("name", what)]);
                    self.pull(&l, Some(*bytes), Some(*bytes), None);
                }
                Step::ImagePulling { image, completed, total, rate_bps } => {
                    let l = labels(&[("cycle", cycle), ("kind", "image"), ("name", image)]);
                    self.pull(&l, *completed, *total, *rate_bps);
                }
                Step::ImagePulled { image, bytes, .. } => {
                    let l = labels(&[("cycle", cycle), ("kind", "image"), ("name", image)]);
                    self.pull(&l, Some(*bytes), Some(*bytes), None);
                }
                _ => {}
            },
            EventBody::EscalationOpened { .. } => {
                self.escalations_opened.get_or_create(&c).inc();
            }
            EventBody::DeadLetter { subject, .. } => {
                self.dead_letters.get_or_create(&labels(&[("subject", subject)])).inc();
            }
            EventBody::DuplicateIgnored { .. } => {
                self.duplicates.inc();
            }
            EventBody::AgentSilent { agent, .. } => {
                self.agent_silent.get_or_create(&labels(&[("agent", agent)])).inc();
            }
            _ => {}
        }
    }

    /// Folds Main's status and escalations answers in.
    pub fn main_answers(&self, status: Option<&OperatorReply>, escalations: Option<&OperatorReply>) {
        match status {
            Some(OperatorReply::Status { cycles, agents, handoffs }) => {
                self.main_up.set(1);
                let now = chrono::Utc::now();
                for c in cycles {
                    let l = labels(&[("cycle", &c.id)]);
                    match c.seconds_left(now) {
                        Some(s) => {
                            self.seconds_left.get_or_create(&l).set(s);
                        }
                        // An ended cycle has nothing left to run.
                        None if c.state.is_final() => {
                            self.seconds_left.get_or_create(&l).set(0.0);
                        }
                        None => {
                            self.seconds_left.remove(&l);
                        }
                    }
                }
                for a in agents {
                    self.heartbeat_age.get_or_create(&labels(&[("agent", &a.agent)])).set(a.age_s);
                }
                for h in handoffs {
                    let l = labels(&[("from", &h.from), ("to", &h.to)]);
                    self.handoffs.get_or_create(&l).set(i64::try_from(h.packages).unwrap_or(i64::MAX));
                }
            }
            _ => {
                self.main_up.set(0);
            }
        }
        if let Some(OperatorReply::Escalations { items }) = escalations {
            self.escalations_waiting.set(items.len() as i64);
        }
    }
}

/// Binds `/metrics` on `listen` and feeds it from NATS until the task is dropped; returns the
/// bound address (port 0 picks a free one).
pub async fn start(
    client: async_nats::Client,
    listen: SocketAddr,
    poll: Duration,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let mut events = client.subscribe(protocol::subjects::EVENT_WILDCARD).await.map_err(std::io::Error::other)?;
    let task = tokio::spawn(async move {
        let serve = serve(listener, metrics.clone());
        let feed = async {
            let mut tick = tokio::time::interval(poll);
            loop {
                tokio::select! {
                    msg = events.next() => {
                        let Some(msg) = msg else { return };
                        match serde_json::from_slice::<Event>(&msg.payload) {
                            Ok(ev) => metrics.event(&ev),
                            Err(e) => tracing::warn!(message = "Not an event; not counted.", subject = %msg.subject, error = %e),
                        }
                    }
                    _ = tick.tick() => {
                        let status = request(&client, &OperatorRequest::Status { cycle: None }, poll).await.ok();
                        let esc = request(&client, &OperatorRequest::Escalations { all: false }, poll).await.ok();
                        metrics.main_answers(status.as_ref(), esc.as_ref());
                    }
                }
            }
        };
        tokio::join!(serve, feed);
    });
    Ok((addr, task))
}

/// `threadcycle metrics`: serves until Ctrl-C or SIGTERM.
pub async fn run(nats: &crate::nats_args::NatsArgs, listen: SocketAddr, json: bool) -> anyhow::Result<u8> {
    let client = match crate::client::connect_cli(nats).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(crate::exit::UNREACHABLE);
        }
    };
    let (addr, task) = match start(client, listen, Duration::from_secs(2)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot serve metrics on {listen}: {e}");
            return Ok(crate::exit::UNREACHABLE);
        }
    };
    let url = format!("http://{addr}/metrics");
    if json {
        println!("{}", serde_json::json!({ "metrics": url }));
    } else {
        println!("serving Prometheus metrics at {url}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    task.abort();
    Ok(0)
}

/// Answers `GET /metrics`; anything else is a 404 naming the one path there is.
async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(message = "Metrics connection not accepted.", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        hyper::Response::builder()
                            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                            .body(Full::new(Bytes::from(metrics.render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"threadcycle serves /metrics only\n")))
                    }
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CycleId, Role};

    fn ev(body: EventBody) -> Event {
        Event::new(CycleId::parse("c1").expect("id"), Role::Writer, body)
    }

    #[test]
    fn a_run_feeds_the_histograms_counters_and_sampler_gauges() {
        let m = Metrics::new();
        m.event(&ev(EventBody::CycleStarted { plan: "p".into(), models: 1, requests: 2 }));
        m.event(&ev(EventBody::PhaseStarted { phase: Phase::Benchmarking }));
        m.event(&ev(EventBody::RunMeasured {
            model: "gemma".into(),
            prompt: "hello".into(),
            repetition: 1,
            ttft_ms: 250.0,
            tokens: 12,
            decode_tps: Some(40.5),
            e2e_ms: Some(521.0),
            tpot_ms: Some(24.6),
            prompt_tokens: Some(9),
            prefill_tps: None,
            sample: Some(LiveSample { engine_mem_bytes: Some(1 << 30), ..Default::default() }),
        }));
        let text = m.render();
        for line in [
            "threadcycle_cycle_phase{cycle=\"c1\",phase=\"benchmarking\"} 1",
            "threadcycle_cycle_phase{cycle=\"c1\",phase=\"planned\"} 0",
            "threadcycle_cycle_requests_planned{cycle=\"c1\"} 2",
            "threadcycle_cycle_requests_measured{cycle=\"c1\"} 1",
            "threadcycle_requests_total{cycle=\"c1\",model=\"gemma\"} 1",
            "threadcycle_output_tokens_total{cycle=\"c1\",model=\"gemma\"} 12",
            "threadcycle_ttft_seconds_sum{cycle=\"c1\",model=\"gemma\"} 0.25",
            "threadcycle_decode_tokens_per_second_sum{cycle=\"c1\",model=\"gemma\"} 40.5",
            "threadcycle_decode_tokens_per_second_count{cycle=\"c1\",model=\"gemma\"} 1",
            "threadcycle_request_duration_seconds_count{cycle=\"c1\",model=\"gemma\"} 1",
            "threadcycle_engine_memory_bytes{cycle=\"c1\",model=\"gemma\"} 1073741824.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        // No prefill figure: no prefill series, and no GPU figure: no GPU series.
        assert!(!text.contains("threadcycle_prefill_tokens_per_second_count{"), "{text}");
        assert!(!text.contains("threadcycle_gpu_power_watts{"), "{text}");
        // Every family is declared, and only those METRIC_NAMES lists.
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = line.split_whitespace().next().unwrap_or_default();
            let listed = METRIC_NAMES.iter().any(|n| n.strip_suffix("_total").unwrap_or(n) == name);
            assert!(listed, "{name} is served but not in METRIC_NAMES");
        }
    }

    #[test]
    fn main_going_quiet_shows_as_main_up_zero() {
        let m = Metrics::new();
        m.main_answers(None, None);
        assert!(m.render().lines().any(|l| l == "threadcycle_main_up 0"));
        m.main_answers(
            Some(&OperatorReply::Status { cycles: vec![], agents: vec![], handoffs: vec![] }),
            Some(&OperatorReply::Escalations { items: vec![] }),
        );
        let t = m.render();
        assert!(t.lines().any(|l| l == "threadcycle_main_up 1") && t.contains("threadcycle_escalations_waiting 0"));
    }
}
