//! `deployment-guide.md`: the settings each measured model ran with and the steps to run it the
//! same way, all read from the Writer's record of the launch.

use super::ctx::Ctx;
use super::format::{DASH, mib, num};
use super::paths::nav;
use super::view::{Effective, View, outcome};
use crate::markdown::{cell, fence, inline, shell_word, table, yaml_str};
use protocol::launch::{ContainerLaunch, Launch};
use protocol::plan::{EngineKind, GpuRequest, ModelSpec, Plan, Runtime};
use std::fmt::Write as _;

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Deployment guide — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("deployment-guide.md"));
    s.push_str("The exact settings each model was measured with: the plan's, plus any change a remedy applied after a failure. Every command below is the Writer's record of how it started and asked the engine, not rebuilt from the settings: step 1 is the command that ran, byte for byte. Follow the steps in order; every command can be pasted as it is.\n");
    let mut any = false;
    for v in ctx.measured() {
        let (Some(spec), Some(e)) = (v.spec, v.settings.as_ref()) else {
            let _ =
                writeln!(s, "\n## {}\n\nThe plan no longer lists this model, so its settings are unknown.", v.name());
            continue;
        };
        any = true;
        model_section(&mut s, ctx, v, spec, e);
    }
    if !any {
        s.push_str("\nNo model was measured, so there are no settings to recommend yet.\n");
    }
    let not: Vec<String> =
        ctx.views.iter().filter(|v| !v.measured()).map(|v| format!("{} ({})", v.name(), outcome(v))).collect();
    if !not.is_empty() {
        let _ = writeln!(s, "\nNot covered here because they were not measured: {}.", not.join("; "));
    }
    s
}

/// One measured model: how it got measured, its settings, and the steps to run it the same way.
fn model_section(s: &mut String, ctx: &Ctx, v: &View, spec: &ModelSpec, e: &Effective) {
    let _ = writeln!(s, "\n## {}\n", v.name());
    match (e.attempt, e.changes.is_empty()) {
        (Some(n), true) if n <= 1 => s.push_str("Measured on the first attempt with the plan's settings.\n\n"),
        (n, _) => {
            let _ = writeln!(
                s,
                "Measured on attempt {} after these changes to the plan: {}. See the [troubleshooting log](troubleshooting.md).\n",
                n.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                if e.changes.is_empty() {
                    "none".to_string()
                } else {
                    e.changes.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", ")
                }
            );
        }
    }
    s.push_str(&settings_table(v, spec, e));
    // Tuned: the winner's launch, as the Writer recorded it when it restored the winner.
    let tuned = v.r.tune.as_ref().and_then(|t| Some((t.winner_beats_baseline()?, t.launch.as_ref()?)));
    match (tuned, &v.r.launch) {
        (Some((w, launch)), _) => {
            let _ = writeln!(
                s,
                "\n**Tuned.** The [tuning phase](benchmark-report.md#tuning) found faster settings than the plan's: trial {} ({}). The steps below start the engine with them; the table above is what the benchmark measured.",
                w.number,
                cell(&w.config.describe())
            );
            launch_steps(s, ctx.plan, spec, e, launch);
            if let Some(measured) = &v.r.launch {
                s.push_str("\nThe plan's own settings, as the benchmark ran them:\n\n");
                s.push_str(&crate::markdown::fence(&measured.command_line(), "sh"));
            }
        }
        (None, Some(launch)) => launch_steps(s, ctx.plan, spec, e, launch),
        (None, None) => recorded_lines_step(s, &v.r.deployment),
    }
}

/// The settings a model was measured with, as a table.
fn settings_table(v: &View, spec: &ModelSpec, e: &Effective) -> String {
    let port = spec.port.unwrap_or(match spec.engine {
        EngineKind::Ollama => 11434,
        EngineKind::LlamaServer | EngineKind::OpenAi => 8080,
    });
    let mut rows = vec![
        vec![
            "Engine".into(),
            match spec.engine {
                EngineKind::Ollama => "Ollama".into(),
                EngineKind::LlamaServer => "llama.cpp `llama-server`".into(),
                EngineKind::OpenAi => "an OpenAI-compatible server".into(),
            },
        ],
        vec![
            "Runtime".into(),
            match spec.runtime {
                Runtime::Docker => "Docker container".into(),
                Runtime::Process => "host process".into(),
                Runtime::Endpoint => format!(
                    "already running at {} (not controlled by threadcycle)",
                    spec.url.as_deref().map(cell).unwrap_or_else(|| DASH.into())
                ),
            },
        ],
        vec!["Model".into(), cell(e.set.tag.as_deref().or(e.set.model_path.as_deref()).unwrap_or(&spec.name))],
    ];
    if spec.runtime == Runtime::Docker {
        rows.push(vec!["Image".into(), spec.image.as_deref().map(cell).unwrap_or_else(|| DASH.into())]);
        rows.push(vec![
            "Memory limit".into(),
            e.set.memory_limit_gb.map(|g| format!("{} GiB (swap off)", num(g))).unwrap_or_else(|| "none".into()),
        ]);
        rows.push(vec![
            "GPUs".into(),
            match &spec.gpus {
                Some(GpuRequest::All) => "all".into(),
                Some(GpuRequest::Indices(ix)) => ix.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                Some(GpuRequest::None) | None => "none".into(),
            },
        ]);
    }
    if spec.runtime == Runtime::Endpoint {
        rows.push(vec!["Measured with".into(), cell(&v.r.manifest.engine)]);
        return table(&["Setting", "Value"], &[], &rows);
    }
    rows.push(vec![
        "Port".into(),
        if spec.port.is_some() {
            port.to_string()
        } else {
            format!("{port} (the plan sets none; the engine's usual port is shown)")
        },
    ]);
    rows.push(vec!["Context".into(), format!("{} tokens", e.set.context)]);
    rows.push(vec!["Parallel slots".into(), e.set.slots.to_string()]);
    rows.push(vec![
        "GPU layers".into(),
        match e.set.gpu_layers {
            Some(l) if l >= 0 => l.to_string(),
            _ => "engine decides".into(),
        },
    ]);
    rows.push(vec![
        "CPU threads".into(),
        e.set.threads.map(|t| t.to_string()).unwrap_or_else(|| "engine default".into()),
    ]);
    if let Some(b) = e.set.batch {
        rows.push(vec!["Batch size".into(), b.to_string()]);
    }
    if let Some(k) = e.set.kv_cache_type {
        rows.push(vec!["KV cache type".into(), k.as_str().into()]);
    }
    if let Some(f) = e.set.flash_attention {
        rows.push(vec!["Flash attention".into(), f.as_str().into()]);
    }
    rows.push(vec!["Load timeout".into(), format!("{} s", e.set.load_timeout_s)]);
    for (k, val) in &e.set.env {
        rows.push(vec![format!("Environment {}", cell(k)), cell(val)]);
    }
    if !e.set.args.is_empty() {
        rows.push(vec!["Extra arguments".into(), cell(&e.set.args.join(" "))]);
    }
    rows.push(vec![
        "Measured with".into(),
        format!(
            "{} (layers on GPU: {})",
            cell(&v.r.manifest.engine),
            v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into())
        ),
    ]);
    table(&["Setting", "Value"], &[], &rows)
}

/// Step 1 when the Writer recorded no launch (results from before it did): its recorded lines,
/// verbatim, and nothing derived.
pub(super) fn recorded_lines_step(s: &mut String, ran: &[String]) {
    let ran: Vec<&str> = ran.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    if ran.is_empty() {
        s.push_str("\nThe Writer recorded no command for this model, so none is shown: a command rebuilt from the settings could differ from the one that was measured.\n");
    } else {
        s.push_str("\n**1. Start the engine** — the command threadcycle ran, exactly as the Writer recorded it:\n\n");
        s.push_str(&fence(&ran.join("\n"), "sh"));
    }
}

/// The steps to run a model the way it was measured, all read from the Writer's record of the
/// launch (nothing is rebuilt from the plan's settings).
pub(super) fn launch_steps(s: &mut String, plan: &Plan, spec: &ModelSpec, e: &Effective, launch: &Launch) {
    if let Some(url) = &launch.endpoint {
        return endpoint_steps(s, plan, spec, e, url, launch);
    }
    s.push_str("\n**1. Start the engine** — the command threadcycle ran, exactly as the Writer recorded it:\n\n");
    s.push_str(&fence(&launch.command_line(), "sh"));
    let tag = e.set.tag.clone().unwrap_or_else(|| spec.name.clone());
    match (&launch.container, spec.engine) {
        (Some(c), engine) => {
            let port = c.host_port.unwrap_or(c.container_port);
            let base = format!("http://127.0.0.1:{port}");
            if c.host_port.is_none() {
                let _ = writeln!(
                    s,
                    "\nThe port on the host was left to Docker; `docker port {} {}` shows it. The steps below assume {port}.",
                    shell_word(&c.name),
                    c.container_port
                );
            }
            match engine {
                EngineKind::Ollama => {
                    s.push_str("\n**2. Pull the model**\n\n");
                    s.push_str(&fence(
                        &format!("docker exec {} ollama pull {}", shell_word(&c.name), shell_word(&tag)),
                        "sh",
                    ));
                    ollama_ask_step(s, &base, &tag, launch);
                }
                EngineKind::LlamaServer | EngineKind::OpenAi => llama_ask_steps(s, plan, &base),
            }
            compose_step(s, spec, launch, c);
            s.push_str("\n**5. Tear it down**\n\n");
            s.push_str(&fence(&format!("docker rm -f {}", shell_word(&c.name)), "sh"));
        }
        (None, EngineKind::Ollama) => {
            let host = launch.env.get("OLLAMA_HOST").cloned().unwrap_or_else(|| "127.0.0.1:11434".into());
            s.push_str("\n**2. Pull the model**\n\n");
            s.push_str(&fence(&format!("OLLAMA_HOST={} ollama pull {}", shell_word(&host), shell_word(&tag)), "sh"));
            ollama_ask_step(s, &format!("http://{host}"), &tag, launch);
        }
        (None, EngineKind::LlamaServer | EngineKind::OpenAi) => {
            let port = launch.arg_value("--port").unwrap_or("8080");
            llama_ask_steps(s, plan, &format!("http://127.0.0.1:{port}"));
            process_compose_step(s, spec, launch);
        }
    }
}

/// An engine that was already running: no command is shown (none ran), what was not controlled
/// is said, and the request to repeat is the measured one.
fn endpoint_steps(s: &mut String, plan: &Plan, spec: &ModelSpec, e: &Effective, url: &str, launch: &Launch) {
    let base = url.trim_end_matches('/');
    let _ = writeln!(
        s,
        "\n**Measured as found.** The engine was already running at {base}; threadcycle ran no command to start it, \
         pulled nothing into it and left it running. What it did not control: {}.\n",
        if spec.engine == EngineKind::Ollama {
            "the server's own settings (`OLLAMA_NUM_PARALLEL`, `OLLAMA_KV_CACHE_TYPE`, flash attention, keep-alive, \
             its model store and which other models it held loaded) — only each request's `options` were threadcycle's"
        } else {
            "the server's settings (context, slots, GPU layers, threads, batch, KV cache), fixed when it was started"
        }
    );
    s.push_str("Other clients may have used the engine during the measurement; their requests would slow these.\n");
    let tag = e.set.tag.clone().unwrap_or_else(|| spec.name.clone());
    if spec.engine == EngineKind::Ollama {
        ollama_ask_step(s, base, &tag, launch);
    } else {
        let body = serde_json::json!({
            "model": tag,
            "messages": [{ "role": "user", "content": "Say hello." }],
            "max_tokens": plan.defaults.max_tokens,
            "temperature": plan.defaults.temperature,
            "seed": plan.defaults.seed,
        });
        let body = serde_json::to_string(&body).unwrap_or_default();
        s.push_str("\n**Ask it something**\n\n");
        s.push_str(&fence(
            &format!(
                "curl -s {base}/v1/chat/completions \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
                shell_word(&body)
            ),
            "sh",
        ));
    }
}

/// Step 3 for Ollama: a request with the `options` the measured requests carried.
pub(super) fn ollama_ask_step(s: &mut String, base: &str, tag: &str, launch: &Launch) {
    s.push_str("\n**3. Ask it something with the measured options**\n\n");
    let options: serde_json::Map<String, serde_json::Value> =
        launch.request_options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let body = serde_json::json!({ "model": tag, "prompt": "Say hello.", "stream": false, "options": options });
    let body = serde_json::to_string(&body).unwrap_or_default();
    s.push_str(&fence(&format!("curl -s {base}/api/generate \\\n  -d {}", shell_word(&body)), "sh"));
    if launch.request_options.contains_key("num_predict") {
        s.push_str("\n`num_predict` is the first prompt's output cap; the other prompts used their own.\n");
    }
}

/// Steps 2 and 3 for llama-server: health, then a request.
pub(super) fn llama_ask_steps(s: &mut String, plan: &Plan, base: &str) {
    s.push_str("\n**2. Wait until it is healthy**\n\n");
    s.push_str(&fence(&format!("curl -s {base}/health"), "sh"));
    s.push_str("\n**3. Ask it something**\n\n");
    s.push_str(&fence(&openai_curl(plan, base), "sh"));
}

/// Step 4 for a container: the recorded launch as a compose service.
pub(super) fn compose_step(s: &mut String, spec: &ModelSpec, launch: &Launch, c: &ContainerLaunch) {
    s.push_str("\n**4. The same as a compose service**\n\n");
    let compose_name = container_name(spec);
    let mut y = String::new();
    let _ = writeln!(y, "services:\n  {}:", compose_name.trim_start_matches("tc-"));
    let _ = writeln!(y, "    image: {}", yaml_str(&launch.program));
    let _ = writeln!(y, "    container_name: {}", yaml_str(&compose_name));
    if !launch.args.is_empty() {
        let _ =
            writeln!(y, "    command: [{}]", launch.args.iter().map(|a| yaml_str(a)).collect::<Vec<_>>().join(", "));
    }
    let port = c.host_port.unwrap_or(c.container_port);
    let _ = writeln!(y, "    ports:\n      - {}", yaml_str(&format!("127.0.0.1:{port}:{}", c.container_port)));
    if !launch.env.is_empty() {
        y.push_str("    environment:\n");
        for (k, v) in &launch.env {
            let _ = writeln!(y, "      {}: {}", yaml_str(k), yaml_str(v));
        }
    }
    if !c.binds.is_empty() {
        y.push_str("    volumes:\n");
        for b in &c.binds {
            let _ = writeln!(y, "      - {}", yaml_str(b));
        }
    }
    if let Some(m) = c.memory_limit_bytes {
        let swap = c.memory_swap_bytes.map(|s| format!("{}m", s >> 20)).unwrap_or_else(|| mib(m));
        let _ = writeln!(y, "    mem_limit: {}\n    memswap_limit: {swap}", mib(m));
    }
    match &c.gpus {
        GpuRequest::All => y.push_str(
            "    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n",
        ),
        GpuRequest::Indices(ix) => {
            let _ = write!(
                y,
                "    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              device_ids: [{}]\n              capabilities: [gpu]\n",
                ix.iter().map(|i| yaml_str(&i.to_string())).collect::<Vec<_>>().join(", ")
            );
        }
        GpuRequest::None => {}
    }
    s.push_str(&fence(&y, "yaml"));
}

/// Step 4 for a llama-server host process: the recorded arguments in a container, with only the
/// model path, listen address and port changed to the container's.
pub(super) fn process_compose_step(s: &mut String, spec: &ModelSpec, launch: &Launch) {
    s.push_str("\n**4. As a compose service**\n\n");
    s.push_str("This model ran as a host process, not in a container. To run it under compose, use a `llama-server` image of your choice (set `image` below: threadcycle did not measure one) with the recorded arguments; only the model path, the listen address and the port are the container's:\n\n");
    let model = launch.arg_value("--model").unwrap_or_default().to_string();
    let (dir, file) =
        model.rsplit_once('/').map(|(d, f)| (d.to_string(), f.to_string())).unwrap_or((".".into(), model.clone()));
    let dir = if dir.is_empty() { "/".to_string() } else { dir };
    let mut args = launch.args.clone();
    for (flag, value) in
        [("--model", format!("/models/{file}")), ("--host", "0.0.0.0".into()), ("--port", "8080".into())]
    {
        if let Some(i) = args.iter().position(|a| a == flag)
            && let Some(v) = args.get_mut(i + 1)
        {
            *v = value;
        }
    }
    let host_port = launch.arg_value("--port").unwrap_or("8080");
    let mut y = String::new();
    let _ = writeln!(y, "services:\n  {}:", container_name(spec).trim_start_matches("tc-"));
    y.push_str("    image: \"REPLACE-WITH-A-LLAMA-SERVER-IMAGE\"\n");
    let _ = writeln!(y, "    command: [{}]", args.iter().map(|c| yaml_str(c)).collect::<Vec<_>>().join(", "));
    let _ = writeln!(y, "    ports:\n      - {}", yaml_str(&format!("127.0.0.1:{host_port}:8080")));
    if !launch.env.is_empty() {
        y.push_str("    environment:\n");
        for (k, v) in &launch.env {
            let _ = writeln!(y, "      {}: {}", yaml_str(k), yaml_str(v));
        }
    }
    let _ = writeln!(y, "    volumes:\n      - {}", yaml_str(&format!("{dir}:/models:ro")));
    s.push_str(&fence(&y, "yaml"));
}

pub(super) fn container_name(spec: &ModelSpec) -> String {
    let n: String =
        spec.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("tc-{n}")
}

pub(super) fn openai_curl(plan: &Plan, base: &str) -> String {
    let body = serde_json::json!({
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": plan.defaults.max_tokens,
        "temperature": plan.defaults.temperature,
        "seed": plan.defaults.seed,
    });
    let body = serde_json::to_string(&body).unwrap_or_default();
    format!(
        "curl -s {base}/v1/chat/completions \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        shell_word(&body)
    )
}
