//! Known failure signatures (engine-api-facts §7) matched against evidence → a diagnosis, how
//! sure it is, the evidence quoted, and ranked remedies.

use protocol::messages::Escalation;
use protocol::plan::EngineKind;
use protocol::results::{Evidence, FailureClass, RemedyAction, RemedyOption};
use protocol::settings::{FlashAttention, KvCacheType, Setting};

/// A diagnosis and its remedies.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// Class.
    pub class: FailureClass,
    /// In words, with the evidence quoted.
    pub text: String,
    /// How sure (0–1).
    pub confidence: f64,
    /// Ranked options (Skip and Abort always last).
    pub options: Vec<RemedyOption>,
}

struct Signature {
    class: FailureClass,
    needles: &'static [&'static str],
    what: &'static str,
    /// How sure a match makes the class.
    confidence: f64,
}

/// Matched case-insensitively against log lines, the engine's error and the failure text.
const SIGNATURES: &[Signature] = &[
    Signature {
        class: FailureClass::OomKilled,
        needles: &[
            "signal: killed",
            "oom-kill",
            "oomkilled",
            "exit status 137",
            "exited (137)",
            "killed by the oom killer",
        ],
        what: "the engine was killed by the kernel's OOM killer",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::EngineExited,
        // The Writer's words when the container's Docker engine did not answer
        // (`host::docker` names it so).
        needles: &["dockerd stopped or is restarting"],
        what: "the Docker engine stopped or restarted and took the engine's container with it; deploying again waits for the engine to answer",
        confidence: 0.9,
    },
    // Ollama 0.12.6's load refusals, sent as HTTP 500 `{"error":…}` (o:server/routes.go:2259-2271).
    Signature {
        class: FailureClass::HostOutOfMemory,
        // o:llm/server.go:541 (llama engine) and :978 (new engine).
        needles: &["model requires more system memory"],
        what: "Ollama refused to load: the part of the model not on the GPU needs more system memory than is free",
        confidence: 0.9,
    },
    Signature {
        class: FailureClass::GpuOutOfMemory,
        // o:llm/server.go:805 (`… with num_gpu = N`, the layers were fixed) and :815 (auto).
        needles: &["memory layout cannot be allocated"],
        what: "Ollama could not fit the model's memory layout on the GPU",
        confidence: 0.9,
    },
    Signature {
        class: FailureClass::OomKilled,
        // o:llm/server.go:1497: the runner died under a request; in a container with a memory
        // limit that is most often the OOM killer (the cgroup's `oom_kill` count confirms it).
        needles: &["due to resource limitations"],
        what: "Ollama's model runner stopped under a request (Ollama: \u{201c}may be due to resource limitations\u{201d}); most likely out of memory",
        confidence: 0.6,
    },
    Signature {
        class: FailureClass::GpuOutOfMemory,
        needles: &[
            "cudamalloc failed",
            "out of device memory",
            "unable to allocate cuda",
            "cuda error: out of memory",
            "failed to allocate cuda",
            "erroroutofmemory",
            "vk_error_out_of_device_memory",
        ],
        what: "the GPU ran out of memory",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::ModelNotFound,
        needles: &[
            "pull model manifest: file does not exist",
            "not found, try pulling it first",
            "model file",
            "no such file or directory",
            "failed to open gguf",
        ],
        what: "the model does not exist under that tag or path",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::ContextOverflow,
        needles: &[
            "exceeds the available context size",
            "input length exceeds the context length",
            "exceed_context_size_error",
        ],
        what: "the prompt does not fit in the context window",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::GpuOutOfMemory,
        needles: &[
            "out of memory",
            "failed to allocate",
            "allocation failed",
            "not enough memory",
            "insufficient memory",
        ],
        what: "memory could not be allocated",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::EngineUnhealthy,
        needles: &["timed out waiting for llama", "did not become healthy", "not healthy within"],
        what: "the engine did not finish loading in time",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::EngineExited,
        needles: &[
            "error loading model",
            "gguf_init",
            "invalid magic",
            "bad magic",
            "ggml_assert",
            "failed to load model",
        ],
        what: "the engine could not load the model file",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::Other,
        needles: &["could not select device driver", "no compatible gpus were discovered"],
        what: "no GPU is visible to the engine",
        confidence: 0.8,
    },
    Signature {
        class: FailureClass::RequestFailed,
        needles: &["server busy, please try again", "maximum pending requests exceeded"],
        what: "the engine's request queue is full",
        confidence: 0.8,
    },
];

pub(crate) fn opt(summary: String, rationale: &str, safe: bool, action: RemedyAction) -> RemedyOption {
    RemedyOption { number: 0, summary, rationale: rationale.into(), safe, action }
}

fn retry(set: &[Setting]) -> RemedyAction {
    RemedyAction::Retry { set: set.to_vec() }
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// A process inside a container with no memory limit killed by the OOM killer while the
/// container lived on: the host's memory ran out, not the container's.
const LIVE_CONTAINER_HOST_OOM: Signature = Signature {
    class: FailureClass::HostOutOfMemory,
    needles: &[],
    what: "the kernel's OOM killer killed a process inside the engine's container (no memory limit, the container lived on): the host ran out of memory",
    confidence: 0.9,
};
/// Failed host checks, escalated by the Reader before anything is deployed (`model` names the
/// models they affect, `failure` the checks as the Reader judged them), and the four answers.
/// None is `safe`, so an ask nobody answers falls back to skipping the affected models
/// ([`auto_choice`]): nothing the checks rule out is deployed.
pub fn host_checks(e: &Escalation) -> Diagnosis {
    let mut options = vec![
        opt(
            "continue anyway".into(),
            "the failed checks stay in the report; every model is deployed as planned",
            false,
            RemedyAction::Continue,
        ),
        opt(
            "fix the host, then re-verify".into(),
            "the Reader runs every check again; a check that still fails asks again",
            false,
            RemedyAction::Reverify,
        ),
        opt(
            format!("skip the affected models ({})", e.model),
            "the other models are deployed; the report records why these were not",
            false,
            RemedyAction::Skip,
        ),
        opt("abort the cycle".into(), "nothing is deployed; the reports say why", false, RemedyAction::Abort),
    ];
    for (i, o) in options.iter_mut().enumerate() {
        o.number = i as u32 + 1;
    }
    let text = format!("host checks failed before anything was deployed: {}", e.failure);
    Diagnosis { class: FailureClass::HostCheck, text, confidence: 1.0, options }
}

/// Diagnoses an escalation with the evidence Debug gathered.
pub fn diagnose(e: &Escalation, ev: &Evidence) -> Diagnosis {
    if e.suspected == FailureClass::HostCheck {
        return host_checks(e);
    }
    let mut haystack = e.failure.to_lowercase();
    for l in &ev.log_tail {
        haystack.push('\n');
        haystack.push_str(&l.to_lowercase());
    }
    if let Some(t) = &ev.engine_error {
        haystack.push('\n');
        haystack.push_str(&t.to_lowercase());
    }
    if let Some(s) = &ev.exit_status {
        haystack.push('\n');
        haystack.push_str(&s.to_lowercase());
    }
    let cgroup_kills = ev.oom_kills.filter(|k| *k > 0);
    let oom_flag = ev.oom_killed == Some(true) || cgroup_kills.is_some() || !ev.oom_events.is_empty();
    let hit = if ev.oom_killed == Some(true) {
        Some((&SIGNATURES[0], "OOMKilled: true".to_string()))
    } else if oom_flag {
        // PID 1 lives on (Docker's flag is false) but the kernel killed a process inside: with a
        // memory limit the container hit it; without one the host itself ran out.
        let mut seen: Vec<String> = ev.oom_events.iter().take(2).cloned().collect();
        if let Some(k) = cgroup_kills {
            seen.push(format!("the container's memory cgroup counts oom_kill {k}"));
        }
        let sig = if e.settings.memory_limit_gb.is_some() { &SIGNATURES[0] } else { &LIVE_CONTAINER_HOST_OOM };
        Some((sig, seen.join("; ")))
    } else {
        SIGNATURES.iter().find_map(|s| s.needles.iter().find(|n| haystack.contains(*n)).map(|n| (s, quote(e, ev, n))))
    };
    let (class, what, quoted, confidence) = match hit {
        Some((s, q)) => (s.class, s.what.to_string(), q, if oom_flag { 0.95 } else { s.confidence }),
        None => (
            e.suspected,
            format!("no known signature matched; the Writer reported {}", e.suspected.as_str()),
            e.failure.clone(),
            0.4,
        ),
    };
    let mut options = remedies(class, e, ev);
    if let Some(url) = &e.endpoint {
        options = crate::endpoint::within_reach(url, e.engine, class, options);
    }
    options.push(opt(
        "skip this model".into(),
        "the rest of the cycle goes on; the report records why",
        true,
        RemedyAction::Skip,
    ));
    options.push(opt(
        "abort the cycle".into(),
        "stops every remaining model; measured results are still reported",
        false,
        RemedyAction::Abort,
    ));
    for (i, o) in options.iter_mut().enumerate() {
        o.number = i as u32 + 1;
    }
    let text = format!("{what} (evidence: \u{201c}{quoted}\u{201d})");
    Diagnosis { class, text, confidence, options }
}

/// The line of evidence that matched, quoted back (trimmed).
fn quote(e: &Escalation, ev: &Evidence, needle: &str) -> String {
    let all = ev
        .log_tail
        .iter()
        .map(String::as_str)
        .chain(ev.engine_error.as_deref())
        .chain(ev.exit_status.as_deref())
        .chain(std::iter::once(e.failure.as_str()));
    for line in all {
        if line.to_lowercase().contains(needle) {
            return line.trim().chars().take(240).collect();
        }
    }
    needle.to_string()
}

fn remedies(class: FailureClass, e: &Escalation, ev: &Evidence) -> Vec<RemedyOption> {
    let s = &e.settings;
    let context = Some(s.context);
    let limit = s.memory_limit_gb;
    let layers = s.gpu_layers;
    let load = s.load_timeout_s;
    let mut v = Vec::new();
    let smaller_ctx = |v: &mut Vec<RemedyOption>, safe: bool| {
        if let Some(c) = context.filter(|c| *c >= 1024) {
            v.push(opt(
                format!("context {c} → {}", c / 2),
                "the KV cache and compute graph shrink with the context",
                safe,
                retry(&[Setting::Context(c / 2)]),
            ));
        }
    };
    let kv_q8 = |v: &mut Vec<RemedyOption>| {
        if s.kv_cache_type.is_some_and(|k| k != KvCacheType::F16) {
            return;
        }
        let how = match e.engine {
            EngineKind::Ollama => "OLLAMA_KV_CACHE_TYPE=q8_0 with OLLAMA_FLASH_ATTENTION=1",
            EngineKind::LlamaServer | EngineKind::OpenAi => "-ctk q8_0 -ctv q8_0 with -fa on",
        };
        v.push(opt(
            format!("KV cache q8_0 with flash attention ({how})"),
            "a q8_0 KV cache takes about half the memory of f16",
            true,
            retry(&[Setting::KvCacheType(KvCacheType::Q8_0), Setting::FlashAttention(FlashAttention::On)]),
        ));
    };
    match class {
        FailureClass::OomKilled => {
            if let Some(l) = limit {
                let want = (l * 1.5).max(l + 2.0).ceil();
                let room = ev.host_ram_available.map(gb);
                match room {
                    Some(r) if want <= r => v.push(opt(
                        format!("memory limit {l} GB → {want} GB"),
                        "the container was killed at its limit and the host has the memory",
                        true,
                        retry(&[Setting::MemoryLimitGb(want)]),
                    )),
                    Some(r) => v.push(opt(
                        format!("memory limit {l} GB → {want} GB (host has only {r:.1} GB available)"),
                        "the container was killed at its limit, but raising it may starve the host",
                        false,
                        retry(&[Setting::MemoryLimitGb(want)]),
                    )),
                    None => v.push(opt(
                        format!("memory limit {l} GB → {want} GB"),
                        "the container was killed at its limit",
                        true,
                        retry(&[Setting::MemoryLimitGb(want)]),
                    )),
                }
            }
            smaller_ctx(&mut v, true);
            kv_q8(&mut v);
        }
        FailureClass::GpuOutOfMemory => {
            let fewer = layers.filter(|l| *l > 1).map(|l| l * 3 / 4);
            if let Some(f) = fewer {
                v.push(opt(
                    format!("GPU layers {} → {f}", layers.unwrap_or_default()),
                    "fewer layers on the GPU leave room for the KV cache and graph",
                    true,
                    retry(&[Setting::GpuLayers(f)]),
                ));
            }
            kv_q8(&mut v);
            smaller_ctx(&mut v, true);
        }
        FailureClass::HostOutOfMemory => {
            // Ollama counts the model's CPU-resident part, KV cache included, against free RAM
            // plus swap (o:llm/server.go:536-542): shrink what stays in RAM.
            kv_q8(&mut v);
            smaller_ctx(&mut v, true);
        }
        FailureClass::EngineUnhealthy => {
            let t = load.max(1);
            v.push(opt(
                format!("load timeout {t} s → {} s", t * 3),
                "large models load slowly from disk; the engine may just need longer",
                true,
                retry(&[Setting::LoadTimeoutS(t * 3)]),
            ));
        }
        FailureClass::ContextOverflow => {
            if let Some(c) = context {
                v.push(opt(
                    format!("context {c} → {}", c * 2),
                    "the prompt plus answer did not fit",
                    true,
                    retry(&[Setting::Context(c * 2)]),
                ));
            }
        }
        FailureClass::RequestFailed if timed_out(e, ev) => {
            // A slow model that was still answering: give it the time, not a cool-down.
            let (r, st) = (s.request_timeout_s.max(60), s.stall_timeout_s.max(30));
            v.push(opt(
                format!("request limit {r} s → {} s, stall limit {st} s → {} s", r * 2, st * 2),
                "the answer was cut by a time limit; a large model partly in RAM decodes slowly",
                true,
                retry(&[Setting::RequestTimeoutS(r * 2), Setting::StallTimeoutS(st * 2)]),
            ));
        }
        FailureClass::RequestFailed | FailureClass::Thermal => {
            v.push(opt(
                "cool down 30 s and retry".into(),
                "a transient overload or heat may pass",
                true,
                RemedyAction::CoolDown { seconds: 30 },
            ));
        }
        FailureClass::ModelNotFound => {
            // Nothing to retry: the tag or path must be fixed in the plan ("check the tag").
        }
        _ => {
            v.push(opt(
                "retry once unchanged".into(),
                "the cause is unknown; one retry tells a transient failure from a real one",
                true,
                RemedyAction::CoolDown { seconds: 5 },
            ));
        }
    }
    v
}

/// Whether the failure was a time limit (the whole-request budget or the stall limit).
fn timed_out(e: &Escalation, ev: &Evidence) -> bool {
    let text = format!("{} {}", e.failure, ev.engine_error.as_deref().unwrap_or("")).to_lowercase();
    ["timed out", "timeout", "no token for", "stalled"].iter().any(|n| text.contains(n))
}

/// The option `auto` applies: the first safe one while attempts remain, else skip.
pub fn auto_choice(d: &Diagnosis, attempt: u32, max_attempts: u32) -> &RemedyOption {
    let last = d.options.iter().find(|o| matches!(o.action, RemedyAction::Skip)).unwrap_or(&d.options[0]);
    if attempt >= max_attempts {
        return last;
    }
    d.options.iter().find(|o| o.safe).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::plan::Policy;

    fn esc(failure: &str, changes: &[Setting]) -> Escalation {
        let plan = protocol::plan::Plan::from_toml(
            "name='t'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\n[[prompts]]\nid='p'\ntext='x'\n",
        )
        .unwrap();
        let mut settings = protocol::settings::Settings::planned(&plan, &plan.models[0]);
        for c in changes {
            settings.apply(c).unwrap();
        }
        Escalation {
            model: "m".into(),
            attempt: 1,
            failure: failure.into(),
            suspected: FailureClass::Other,
            evidence: Evidence::default(),
            target: None,
            endpoint: None,
            engine: EngineKind::LlamaServer,
            settings,
            max_attempts: 3,
            policy: Policy::default(),
        }
    }

    #[test]
    fn failed_host_checks_offer_continue_reverify_skip_and_abort_and_time_out_to_skip() {
        // Even a failure text that matches an engine signature stays a host-check diagnosis.
        let mut e = esc(
            "disk.free: 3.0 GB (needs ≥ 100 GB); memory.allocatable: the container was killed by the OOM killer",
            &[],
        );
        e.suspected = FailureClass::HostCheck;
        e.model = "a, b".into();
        let d = diagnose(&e, &Evidence { oom_killed: Some(true), ..Default::default() });
        assert_eq!(d.class, FailureClass::HostCheck);
        assert!(d.text.contains("disk.free: 3.0 GB"), "{}", d.text);
        let actions: Vec<_> = d.options.iter().map(|o| (o.number, o.action.clone())).collect();
        assert_eq!(
            actions,
            [
                (1, RemedyAction::Continue),
                (2, RemedyAction::Reverify),
                (3, RemedyAction::Skip),
                (4, RemedyAction::Abort)
            ]
        );
        assert!(d.options[2].summary.contains("(a, b)"));
        // Nobody answers: the affected models are skipped, never deployed unchecked.
        assert_eq!(auto_choice(&d, 1, 3).action, RemedyAction::Skip);
    }

    #[test]
    fn oom_kill_raises_the_limit_when_the_host_has_room() {
        let e = esc("container exited", &[Setting::MemoryLimitGb(0.5), Setting::Context(2048)]);
        let ev = Evidence { oom_killed: Some(true), host_ram_available: Some(16 << 30), ..Default::default() };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::OomKilled);
        assert!(d.confidence > 0.9);
        assert_eq!(d.options[0].action, RemedyAction::Retry { set: vec![Setting::MemoryLimitGb(3.0)] });
        assert_eq!(auto_choice(&d, 1, 3).number, 1);
        assert!(matches!(auto_choice(&d, 3, 3).action, RemedyAction::Skip));
    }

    #[test]
    fn a_docker_engine_that_went_away_is_named_and_retried_unchanged() {
        let mut e = esc(
            "hello: the engine's container went down with its Docker engine (stream broke): Docker could not inspect container `c1`: the Docker engine at unix:///run/d.sock did not answer: dockerd stopped or is restarting",
            &[],
        );
        e.suspected = FailureClass::EngineExited;
        let d = diagnose(&e, &Evidence::default());
        assert_eq!(d.class, FailureClass::EngineExited);
        assert!(d.text.contains("Docker engine stopped or restarted"), "{}", d.text);
        assert!(matches!(d.options[0].action, RemedyAction::CoolDown { .. }), "{:?}", d.options);
        assert_eq!(auto_choice(&d, 1, 3).number, 1);
    }

    #[test]
    fn unknown_tag_says_check_the_tag_and_auto_skips() {
        let e = esc("pull failed", &[]);
        let ev =
            Evidence { engine_error: Some("pull model manifest: file does not exist".into()), ..Default::default() };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::ModelNotFound);
        assert!(d.text.contains("file does not exist"), "{}", d.text);
        assert!(matches!(auto_choice(&d, 1, 3).action, RemedyAction::Skip));
    }

    #[test]
    fn never_healthy_gets_a_longer_timeout_and_quotes_the_log() {
        let e = esc("llama-server did not become healthy within 5s", &[Setting::LoadTimeoutS(5)]);
        let ev = Evidence { log_tail: vec!["load_model: loading model".into()], ..Default::default() };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::EngineUnhealthy);
        assert_eq!(d.options[0].action, RemedyAction::Retry { set: vec![Setting::LoadTimeoutS(15)] });
    }

    #[test]
    fn cuda_oom_lowers_gpu_layers_first() {
        let e = esc("failed", &[Setting::GpuLayers(40), Setting::Context(4096)]);
        let ev = Evidence {
            log_tail: vec!["ggml_backend_cuda_buffer_type_alloc_buffer: allocating 35533.34 MiB on device 0: cudaMalloc failed: out of memory".into()],
            ..Default::default()
        };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::GpuOutOfMemory);
        assert_eq!(d.options[0].action, RemedyAction::Retry { set: vec![Setting::GpuLayers(30)] });
    }

    #[test]
    fn a_timed_out_answer_gets_more_time_not_a_cool_down() {
        let e = esc(
            "the engine's answer stalled: nothing for 120s after 3 streamed chunk(s)",
            &[Setting::RequestTimeoutS(900)],
        );
        let e = Escalation { suspected: FailureClass::RequestFailed, ..e };
        let d = diagnose(&e, &Evidence::default());
        assert_eq!(
            d.options[0].action,
            RemedyAction::Retry { set: vec![Setting::RequestTimeoutS(1800), Setting::StallTimeoutS(240)] }
        );
    }

    fn ollama_esc(engine_error: &str, changes: &[Setting]) -> (Escalation, Evidence) {
        let e = Escalation { engine: EngineKind::Ollama, ..esc("warm-up failed", changes) };
        (e, Evidence { engine_error: Some(engine_error.into()), ..Default::default() })
    }

    #[test]
    fn ollama_system_memory_refusal_shrinks_what_stays_in_ram() {
        // The body Ollama 0.12.6 sends (o:llm/server.go:541 through o:server/routes.go:2270).
        let (e, ev) = ollama_esc(
            "model requires more system memory (38.2 GiB) than is available (30.1 GiB)",
            &[Setting::Context(8192)],
        );
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::HostOutOfMemory);
        assert!(d.text.contains("38.2 GiB"), "{}", d.text);
        assert_eq!(
            d.options[0].action,
            retry(&[Setting::KvCacheType(KvCacheType::Q8_0), Setting::FlashAttention(FlashAttention::On)])
        );
        assert!(d.options[0].summary.contains("OLLAMA_KV_CACHE_TYPE=q8_0"), "{}", d.options[0].summary);
        assert_eq!(d.options[1].action, retry(&[Setting::Context(4096)]));
    }

    #[test]
    fn ollama_memory_layout_refusal_lowers_gpu_layers() {
        let (e, ev) = ollama_esc("memory layout cannot be allocated with num_gpu = 40", &[Setting::GpuLayers(40)]);
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::GpuOutOfMemory);
        assert_eq!(d.options[0].action, retry(&[Setting::GpuLayers(30)]));
        assert!(d.confidence >= 0.9);
    }

    #[test]
    fn a_stopped_runner_is_an_oom_kill_for_sure_when_the_cgroup_counted_one() {
        let text = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details";
        let (e, ev) = ollama_esc(text, &[Setting::MemoryLimitGb(30.0)]);
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::OomKilled);
        assert!(d.confidence < 0.7, "{}", d.confidence);
        // PID 1 (`ollama serve`) lived, so Docker's flag is false; the cgroup counted the kill.
        let ev = Evidence { oom_killed: Some(false), oom_kills: Some(1), host_ram_available: Some(64 << 30), ..ev };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::OomKilled);
        assert!(d.confidence > 0.9);
        assert!(d.text.contains("oom_kill 1"), "{}", d.text);
        assert_eq!(d.options[0].action, retry(&[Setting::MemoryLimitGb(45.0)]));
    }

    #[test]
    fn an_oom_event_in_a_live_container_is_out_of_memory_with_the_event_quoted() {
        let text = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details";
        let event = "Docker event \u{201c}oom\u{201d} for container tc-c1-m at 2026-11-30T18:31:16Z".to_string();
        // No memory limit: the host ran out, Docker's event the only sign (the cgroup unread).
        let (e, ev) = ollama_esc(text, &[]);
        let ev = Evidence { oom_killed: Some(false), oom_events: vec![event.clone()], ..ev };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::HostOutOfMemory);
        assert!(d.confidence > 0.9, "{}", d.confidence);
        assert!(d.text.contains(&event), "{}", d.text);
        assert!(d.options.iter().any(|o| matches!(&o.action, RemedyAction::Retry { set } if set.contains(&Setting::KvCacheType(KvCacheType::Q8_0)))), "{:?}", d.options);
        // With a limit the container hit it: raise the limit, the event and the count quoted.
        let (e, ev) = ollama_esc(text, &[Setting::MemoryLimitGb(30.0)]);
        let ev = Evidence {
            oom_killed: Some(false),
            oom_kills: Some(2),
            oom_events: vec![event.clone()],
            host_ram_available: Some(64 << 30),
            ..ev
        };
        let d = diagnose(&e, &ev);
        assert_eq!(d.class, FailureClass::OomKilled);
        assert!(d.text.contains(&event) && d.text.contains("oom_kill 2"), "{}", d.text);
        assert_eq!(d.options[0].action, retry(&[Setting::MemoryLimitGb(45.0)]));
    }

    #[test]
    fn options_are_numbered_with_skip_and_abort_last() {
        let d = diagnose(&esc("weird", &[]), &Evidence::default());
        let n: Vec<u32> = d.options.iter().map(|o| o.number).collect();
        assert_eq!(n, (1..=d.options.len() as u32).collect::<Vec<_>>());
        assert!(matches!(d.options.last().map(|o| &o.action), Some(RemedyAction::Abort)));
    }
}
