//! The endpoint runtime end to end: a real llama-server started by the test (outside
//! threadcycle) is measured as found and still runs afterwards; bad endpoints (a model the
//! engine lacks, nothing listening, a web server that is not an engine) each fail their own
//! model by name, before anything is measured, without losing the model measured before them.

use super::support::*;
use protocol::results::ModelStatus;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A llama-server the test owns, killed on drop.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `GET path` on 127.0.0.1:`port`: the status code, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A plain web server (a NAS admin page, say) answering every request with HTML.
fn html_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "<!doctype html><html><body>NAS admin</body></html>";
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn start_llama_server(port: u16) -> Engine {
    let child = Command::new("llama-server")
        .env("PATH", path_env())
        .args(["--model"])
        .arg(model())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "-c", "1024", "-t", "2", "--alias", "gemma3-270m"])
        .args(["--no-webui"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-server");
    let engine = Engine(child);
    let start = Instant::now();
    while http_status(port, "/health") != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(120), "llama-server did not become healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    engine
}

#[test]
fn an_engine_already_running_is_measured_as_found_and_left_running() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut engine = start_llama_server(port);
    let url = format!("http://127.0.0.1:{port}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let html = format!("http://127.0.0.1:{}", html_server());
    let endpoint = |name: &str, url: &str, tag: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nengine = \"openai\"\nruntime = \"endpoint\"\nurl = \"{url}\"\ntag = \"{tag}\"\n"
        )
    };
    let plan = format!(
        "name = \"endpoint\"\n[defaults]\nrepetitions = 2\nmax_tokens = 12\n\n{}{}{}{}\n\
         [[prompts]]\nid = \"hello\"\ntext = \"Say hello to a homelab operator.\"\n\n\
         [[prompts]]\nid = \"docker\"\ntext = \"Name one benefit of containers.\"\n\n\
         [policy]\ndefault = \"skip\"\n\n\
         [concurrent]\nlevels = [2]\n\n[[concurrent.models]]\nname = \"found-together\"\nengine = \"openai\"\n\
         runtime = \"endpoint\"\nurl = \"{url}\"\ntag = \"gemma3-270m\"\n",
        endpoint("found", &url, "gemma3-270m"),
        endpoint("missing", &url, "llama3.1:70b"),
        endpoint("nothing-there", &dead, "gemma3-270m"),
        endpoint("not-an-engine", &html, "gemma3-270m"),
    );
    let plan_path = tmp.path().join("endpoint.toml");
    std::fs::write(&plan_path, plan).expect("plan");
    let out = tmp.path().join("docs-out");
    let dir = up_ok(&plan_path, &out);
    let r = results(&dir);

    // Measured with the usual protocol: every prompt × repetition.
    let found = &r.models[0];
    assert_eq!(found.status, ModelStatus::Measured, "{found:?}");
    assert_eq!(found.runs.len(), 4, "{:?}", found.runs);
    assert!(found.runs.iter().all(|x| x.output_tokens > 0 && x.ttft_ms > 0.0), "{:?}", found.runs);
    // The record says where it was found; no command was run or is shown.
    let launch = found.launch.as_ref().expect("a launch record");
    assert_eq!(launch.endpoint.as_deref(), Some(url.as_str()));
    assert!(launch.program.is_empty() && launch.args.is_empty() && found.deployment.is_empty(), "{launch:?}");
    // The engine's process was found listening and sampled.
    let tel = found.telemetry.as_ref().expect("telemetry");
    assert!(tel.engine_mem_bytes.is_some(), "the llama-server process was not sampled: {tel:?}");
    // Fit is not predicted for an engine threadcycle does not control.
    assert_eq!(r.verification.verdicts[0].source, "not controlled", "{:?}", r.verification.verdicts[0]);

    // Bad input: each later model failed by name, with its URL, and nothing was measured for it.
    let failed = |i: usize| match &r.models[i].status {
        ModelStatus::Failed { reason } => {
            assert!(r.models[i].runs.is_empty() && r.models[i].attempts.is_empty(), "{:?}", r.models[i]);
            reason.clone()
        }
        other => panic!("model {i} was not failed as bad input: {other:?}"),
    };
    let missing = failed(1);
    assert!(missing.contains("`missing`") && missing.contains(&url) && missing.contains("`llama3.1:70b`"), "{missing}");
    assert!(missing.contains("`gemma3-270m`"), "the error lists what the engine has: {missing}");
    let dead_reason = failed(2);
    assert!(dead_reason.contains("`nothing-there`") && dead_reason.contains(&dead), "{dead_reason}");
    assert!(dead_reason.contains("nothing answers"), "{dead_reason}");
    let html_reason = failed(3);
    assert!(html_reason.contains("`not-an-engine`") && html_reason.contains(&html), "{html_reason}");
    assert!(html_reason.contains("not as an engine"), "{html_reason}");

    // The concurrent phase measured the endpoint at levels 1 and 2 as found, and says whose
    // slots those were.
    let c = r.concurrent.as_ref().expect("the concurrent phase's results");
    let levels: Vec<(u32, u32)> =
        c.levels.iter().filter(|l| l.model == "found-together").map(|l| (l.level, l.requests)).collect();
    assert_eq!(levels, vec![(1, 1), (2, 2)], "{c:?}");
    assert!(
        c.notes.iter().any(|n| n.contains("found-together") && n.contains(&url) && n.contains("not threadcycle's")),
        "{:?}",
        c.notes
    );

    // threadcycle did not stop the engine.
    assert!(engine.0.try_wait().expect("wait").is_none(), "llama-server was stopped");
    assert_eq!(http_status(port, "/health"), Some(200), "llama-server no longer answers");

    // The reports say what was not controlled, and print no start command.
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("deployment guide");
    let section = guide.split("## found").nth(1).expect("a section for the endpoint model");
    let section = section.split("\n## ").next().unwrap_or_default();
    assert!(section.contains("Measured as found") && section.contains(&url), "{section}");
    assert!(section.contains("What it did not control"), "{section}");
    assert!(!section.contains("Start the engine") && !section.contains("llama-server --model"), "{section}");
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    assert!(report.contains("Not controlled by threadcycle") && report.contains(&url), "{report}");
}

#[test]
fn endpoint_plans_refuse_settings_the_running_engine_owns() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("bad.toml");
    std::fs::write(
        &p,
        "name = \"bad\"\n[[models]]\nname = \"m\"\nengine = \"openai\"\nruntime = \"endpoint\"\n\
         url = \"http://127.0.0.1:8000\"\ntag = \"m\"\ngpu_layers = 20\n[[prompts]]\nid = \"p\"\ntext = \"x\"\n",
    )
    .expect("plan");
    let o = threadcycle().args(["plan", "check"]).arg(&p).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("models[0].gpu_layers") && err.contains("http://127.0.0.1:8000"), "{}", show(&o));
}

/// `POST path` with a JSON body on 127.0.0.1:`port`: the status code.
fn http_post(port: u16, path: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn an_ollama_service_already_running_has_its_fit_predicted_from_api_show() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    // The stand-in as `ollama serve`, started by the test with a model already pulled.
    let _engine = Engine(
        Command::new(fake_engine())
            .arg("serve")
            .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
            .env("OLLAMA_MODELS", tmp.path().join("store"))
            .env("TC_FAKE_TPS", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tc-fake-engine serve"),
    );
    let start = Instant::now();
    while http_status(port, "/") != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "the stand-in did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_post(port, "/api/pull", r#"{"model":"tiny-endpoint:1b","stream":false}"#), Some(200));
    let url = format!("http://127.0.0.1:{port}");
    let plan = format!(
        "name = \"ollama-endpoint\"\n[defaults]\nrepetitions = 1\nmax_tokens = 8\ncontext = 2048\n\n\
         [[models]]\nname = \"service\"\nengine = \"ollama\"\nruntime = \"endpoint\"\nurl = \"{url}\"\ntag = \"tiny-endpoint:1b\"\n\n\
         [[prompts]]\nid = \"hello\"\ntext = \"Say hello to a homelab operator.\"\n\n[policy]\ndefault = \"skip\"\n"
    );
    let plan_path = tmp.path().join("ollama-endpoint.toml");
    std::fs::write(&plan_path, plan).expect("plan");
    let dir = up_ok(&plan_path, &tmp.path().join("out"));
    let r = results(&dir);
    assert_eq!(r.models[0].status, ModelStatus::Measured, "{:?}", r.models[0]);
    let v = &r.verification.verdicts[0];
    assert_eq!(v.source, format!("Ollama /api/show at {url}"), "{v:?}");
    assert_ne!(v.fit, protocol::results::Fit::Unknown, "{v:?}");
    // The stand-in's tensor table: Q8_0 (34 bytes per 32) matrices, F32 norms, 18 blocks.
    let q8 = |e: u64| e / 32 * 34;
    let block = q8(640 * 1024 * 2 + 640 * 256 * 2 + 640 * 2048 * 3) + 2 * 640 * 4;
    assert_eq!(v.weights_bytes, Some(q8(640 * 262_144) + 640 * 4 + 18 * block), "{v:?}");
    assert!(v.reason.contains("OLLAMA_NUM_PARALLEL"), "{}", v.reason);
}
