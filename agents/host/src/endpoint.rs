//! An engine that is already running at a URL (the endpoint runtime): what answers there, in
//! which API, whether it has the model, and — when the URL is on this machine — which process
//! listens on its port (`/proc/net/tcp{,6}` socket inode → `/proc/<pid>/fd`).
//!
//! Nothing here starts, stops or changes the engine: it is asked read-only questions
//! (`GET /api/version`, `/api/tags`, `/v1/models`, `/`).

use crate::engine::http_client;
use serde_json::Value;
use std::time::Duration;

/// The API an endpoint is expected to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointApi {
    /// Ollama's own API (`/api/…`).
    Ollama,
    /// The OpenAI-compatible API (`/v1/…`): vLLM, LM Studio, llama-server.
    OpenAi,
}

impl EndpointApi {
    fn describe(self) -> &'static str {
        match self {
            EndpointApi::Ollama => "Ollama's API",
            EndpointApi::OpenAi => "an OpenAI-compatible API",
        }
    }

    fn plan_word(self) -> &'static str {
        match self {
            EndpointApi::Ollama => "ollama",
            EndpointApi::OpenAi => "openai",
        }
    }
}

/// Why an endpoint cannot be measured. Each names the URL and the plan's model, and is found
/// before anything is measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    /// Nothing answers at the URL.
    #[error(
        "model `{model}`: nothing answers at {url} ({reason}); start the engine there or correct the model's `url`"
    )]
    Unreachable {
        /// The plan's model name.
        model: String,
        /// The URL.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// Something answers, but not as an engine.
    #[error(
        "model `{model}`: {url} answers, but not as an engine ({seen}); point the model's `url` at Ollama or an OpenAI-compatible server"
    )]
    NotAnEngine {
        /// The plan's model name.
        model: String,
        /// The URL.
        url: String,
        /// What it answered instead.
        seen: String,
    },
    /// An engine answers, in the other API.
    #[error("model `{model}`: {url} speaks {found}, not {expected} as the plan says; set `engine = \"{fix}\"`")]
    OtherApi {
        /// The plan's model name.
        model: String,
        /// The URL.
        url: String,
        /// The API the plan expects.
        expected: String,
        /// The API that answered.
        found: String,
        /// The plan's `engine` value that would match.
        fix: String,
    },
    /// The engine does not have the model.
    #[error("model `{model}`: the engine at {url} has no model `{name}` (it lists {listed}){hint}")]
    NoSuchModel {
        /// The plan's model name.
        model: String,
        /// The URL.
        url: String,
        /// The name the plan gives (`tag`).
        name: String,
        /// What the engine lists, shortened.
        listed: String,
        /// What to do about it.
        hint: String,
    },
}

/// What was found at a working endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The engine's version, when it says (Ollama's `/api/version`).
    pub version: Option<String>,
    /// The model's name exactly as the engine lists it.
    pub listed_as: String,
    /// The listening process, when the URL is on this machine and it could be found.
    pub pid: Option<u32>,
    /// Why the engine's process is not sampled, when it is not.
    pub process_note: Option<String>,
}

/// One GET with a short limit: status and body (at most 64 KiB kept), or the transport error.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = http.get(url).timeout(Duration::from_secs(5)).send().await.map_err(|e| describe_error(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let mut cut = body.len().min(64 << 10);
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok((status, body[..cut].to_string()))
}

fn describe_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Ollama's `/api/version` (`{"version":"0.12.6"}`) or `GET /` = `Ollama is running`.
async fn ollama_version(http: &reqwest::Client, base: &str) -> Option<String> {
    if let Ok((200, body)) = get(http, &format!("{base}/api/version")).await
        && let Ok(v) = serde_json::from_str::<Value>(&body)
        && let Some(version) = v["version"].as_str()
    {
        return Some(version.to_string());
    }
    match get(http, &format!("{base}/")).await {
        Ok((200, body)) if body.trim() == "Ollama is running" => Some(String::new()),
        _ => None,
    }
}

/// The model ids of `GET /v1/models` (`{"object":"list","data":[{"id":…}]}`), when it answers so.
async fn openai_models(http: &reqwest::Client, base: &str) -> Option<Vec<String>> {
    let (status, body) = get(http, &format!("{base}/v1/models")).await.ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let data = v["data"].as_array()?;
    Some(data.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
}

/// The model names of Ollama's `GET /api/tags`.
async fn ollama_models(http: &reqwest::Client, base: &str) -> Vec<String> {
    let Ok((200, body)) = get(http, &format!("{base}/api/tags")).await else { return Vec::new() };
    let Ok(v) = serde_json::from_str::<Value>(&body) else { return Vec::new() };
    v["models"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["name"].as_str().or(m["model"].as_str()).map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `llama3` is `llama3:latest` to Ollama.
fn ollama_name(tag: &str) -> String {
    let t = tag.trim().to_ascii_lowercase();
    if t.rsplit('/').next().is_some_and(|last| last.contains(':')) { t } else { format!("{t}:latest") }
}

/// Whether an OpenAI model id names `wanted`: the same id, or a file path (llama-server lists
/// its `--model` path unless given `--alias`) whose file name, with or without `.gguf`, is it.
fn openai_id_matches(id: &str, wanted: &str) -> bool {
    if id == wanted {
        return true;
    }
    let file = id.rsplit('/').next().unwrap_or(id);
    file == wanted || file.strip_suffix(".gguf") == Some(wanted)
}

fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return "no model".into();
    }
    let shown: Vec<String> =
        names.iter().take(8).map(|n| format!("`{}`", n.chars().take(120).collect::<String>())).collect();
    let more = names.len().saturating_sub(8);
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

/// Checks the endpoint at `url` for the plan's model `model` (named `name` at the engine),
/// expecting `api`. Read-only; about a second when all is well.
pub async fn probe(url: &str, api: EndpointApi, model: &str, name: &str) -> Result<Found, EndpointError> {
    let base = url.trim_end_matches('/');
    let http = http_client();
    let (model, url_s) = (model.to_string(), base.to_string());
    // Reachable at all?
    let root = get(&http, &format!("{base}/")).await;
    if let Err(reason) = &root {
        return Err(EndpointError::Unreachable { model, url: url_s, reason: reason.clone() });
    }
    let ollama = ollama_version(&http, base).await;
    let openai = if ollama.is_some() { None } else { openai_models(&http, base).await };
    let found_api = match (&ollama, &openai) {
        (Some(_), _) => EndpointApi::Ollama,
        (None, Some(_)) => EndpointApi::OpenAi,
        (None, None) => {
            let seen = match &root {
                Ok((status, body)) => {
                    let kind = if body.trim_start().starts_with('<') { "an HTML page" } else { "a body" };
                    format!(
                        "`GET /` gave HTTP {status} with {kind}; neither `/api/version` nor `/v1/models` answered as an engine"
                    )
                }
                Err(e) => e.clone(),
            };
            return Err(EndpointError::NotAnEngine { model, url: url_s, seen });
        }
    };
    if found_api != api {
        return Err(EndpointError::OtherApi {
            model,
            url: url_s,
            expected: api.describe().into(),
            found: found_api.describe().into(),
            fix: found_api.plan_word().into(),
        });
    }
    let (listed_as, names) = match api {
        EndpointApi::Ollama => {
            let names = ollama_models(&http, base).await;
            let wanted = ollama_name(name);
            (names.iter().find(|n| ollama_name(n) == wanted).cloned(), names)
        }
        EndpointApi::OpenAi => {
            let names = openai.unwrap_or_default();
            (names.iter().find(|n| openai_id_matches(n, name)).cloned(), names)
        }
    };
    let Some(listed_as) = listed_as else {
        let hint = match api {
            EndpointApi::Ollama => format!(
                "; threadcycle does not pull into an endpoint: run `ollama pull {name}` there first, or set the model's `tag` to one it lists"
            ),
            EndpointApi::OpenAi => "; set the model's `tag` to one of the ids it lists".into(),
        };
        return Err(EndpointError::NoSuchModel {
            model,
            url: url_s,
            name: name.to_string(),
            listed: listing(&names),
            hint,
        });
    };
    let (pid, process_note) = match local_port(base) {
        Some(port) => match listening_pid(port) {
            Some(pid) => (Some(pid), None),
            None => (
                None,
                Some(format!(
                    "the process listening on port {port} could not be found (another user's, or in a container): its memory and CPU are not sampled"
                )),
            ),
        },
        None => (None, Some(format!("{base} is not on this machine: the engine's memory and CPU are not sampled"))),
    };
    Ok(Found { version: ollama.filter(|v| !v.is_empty()), listed_as, pid, process_note })
}

/// The port of a URL on this machine (loopback, `localhost`, `0.0.0.0`); `None` for another host.
pub fn local_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.ends_with(']') => (h, p.parse::<u16>().ok()?),
        _ => (authority, if scheme == "https" { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let local = host == "localhost" || host == "0.0.0.0" || host == "::" || host == "::1" || host.starts_with("127.");
    local.then_some(port)
}

/// The process listening on TCP `port` on this machine: the socket's inode from
/// `/proc/net/tcp` and `/proc/net/tcp6` (state `0A` = LISTEN), then the process holding
/// `socket:[inode]` among its open files. `None` when it cannot be seen (another user's
/// process without permission, another network namespace).
pub fn listening_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| link.as_os_str() == w.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The inodes of sockets listening on `port` in one `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = cols.get(1)?;
            let state = cols.get(3)?;
            let inode = cols.get(9)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port && *state == "0A" && *inode != "0").then(|| inode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::fake_http::{FakeServer, Route};

    #[test]
    fn a_proc_net_tcp_table_gives_the_listening_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000 100 0 0 10 0\n\
   1: 0100007F:2CAA 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 41299 1 0000 20 4 30 10 -1\n";
        assert_eq!(listening_inodes(table, 11434), vec!["41234".to_string()]);
        assert!(listening_inodes(table, 8080).is_empty());
    }

    #[test]
    fn only_urls_on_this_machine_have_a_local_port() {
        assert_eq!(local_port("http://127.0.0.1:11434"), Some(11434));
        assert_eq!(local_port("http://localhost:8080/"), Some(8080));
        assert_eq!(local_port("http://[::1]:8000"), Some(8000));
        assert_eq!(local_port("http://gpu1.lan:11434"), None);
    }

    #[test]
    fn this_tests_own_listener_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
    }

    #[test]
    fn a_llama_server_model_path_matches_its_file_name() {
        assert!(openai_id_matches("/models/gemma-3-270m-it-Q4_K_M.gguf", "gemma-3-270m-it-Q4_K_M"));
        assert!(openai_id_matches("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B"));
        assert!(!openai_id_matches("/models/a.gguf", "b"));
        assert_eq!(ollama_name("codellama"), "codellama:latest");
    }

    #[tokio::test]
    async fn each_kind_of_bad_endpoint_is_named_with_url_and_model() {
        // Nothing listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let e = probe(&url, EndpointApi::Ollama, "small", "codellama:7b").await.unwrap_err();
        assert!(matches!(e, EndpointError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&url) && e.to_string().contains("`small`"), "{e}");
        // A web server that is not an engine.
        let html =
            FakeServer::start(vec![Route::text("GET", "/", 200, "<html><body>NAS admin</body></html>")]).await.unwrap();
        let e = probe(&html.url(), EndpointApi::OpenAi, "small", "x").await.unwrap_err();
        assert!(matches!(e, EndpointError::NotAnEngine { .. }), "{e}");
        assert!(e.to_string().contains("an HTML page"), "{e}");
        // Ollama given as OpenAI.
        let ollama = FakeServer::start(vec![
            Route::text("GET", "/", 200, "Ollama is running"),
            Route::json("GET", "/api/version", 200, &serde_json::json!({"version": "0.12.6"})),
            Route::json(
                "GET",
                "/api/tags",
                200,
                &serde_json::json!({"models": [{"name": "codellama:7b", "model": "codellama:7b"}]}),
            ),
        ])
        .await
        .unwrap();
        let e = probe(&ollama.url(), EndpointApi::OpenAi, "small", "codellama:7b").await.unwrap_err();
        assert!(e.to_string().contains("set `engine = \"ollama\"`"), "{e}");
        // A model the engine does not have.
        let e = probe(&ollama.url(), EndpointApi::Ollama, "small", "deepseek-coder:6.7b").await.unwrap_err();
        assert!(matches!(e, EndpointError::NoSuchModel { .. }), "{e}");
        assert!(e.to_string().contains("`codellama:7b`") && e.to_string().contains("ollama pull"), "{e}");
        // And the one it has.
        let found = probe(&ollama.url(), EndpointApi::Ollama, "small", "codellama:7b").await.unwrap();
        assert_eq!((found.version.as_deref(), found.listed_as.as_str()), (Some("0.12.6"), "codellama:7b"));
        // This test's own process serves it.
        assert_eq!(found.pid, Some(std::process::id()));
        // An OpenAI server given as Ollama.
        let openai = FakeServer::start(vec![Route::json(
            "GET",
            "/v1/models",
            200,
            &serde_json::json!({"object": "list", "data": [{"id": "m", "object": "model"}]}),
        )])
        .await
        .unwrap();
        let e = probe(&openai.url(), EndpointApi::Ollama, "small", "m").await.unwrap_err();
        assert!(e.to_string().contains("set `engine = \"openai\"`"), "{e}");
    }
}
