//! Remedies for a model measured at an endpoint: an engine already running that threadcycle did
//! not start and cannot reconfigure, restart or stop. A change Debug can make there stays an
//! option; any other becomes an instruction for the operator to carry out on the engine, after
//! which the model is retried unchanged. `auto` never applies an instruction.

use protocol::plan::EngineKind;
use protocol::results::{FailureClass, RemedyAction, RemedyOption};
use protocol::settings::Setting;

use crate::catalogue::opt;

/// Whether threadcycle can make `s` take effect at an endpoint: the client's own time limits
/// always; the context, GPU layers, threads and batch only for Ollama, which takes them per
/// request (`options`: `num_ctx`, `num_gpu`, `num_thread`, `num_batch`). Everything else (KV
/// cache, flash attention, memory limit, slots, image, binary, environment, arguments, chat
/// template, model file or tag) was fixed when the engine was started.
pub fn settable(engine: EngineKind, s: &Setting) -> bool {
    match s {
        Setting::LoadTimeoutS(_) | Setting::RequestTimeoutS(_) | Setting::StallTimeoutS(_) => true,
        Setting::Context(_) | Setting::GpuLayers(_) | Setting::Threads(_) | Setting::Batch(_) => engine.speaks_ollama(),
        _ => false,
    }
}

/// Whether retrying the engine as it is can help a failure of `class` (a transient cause), as
/// opposed to one that will recur until something about the engine changes.
fn may_pass(class: FailureClass) -> bool {
    !matches!(
        class,
        FailureClass::OomKilled
            | FailureClass::GpuOutOfMemory
            | FailureClass::HostOutOfMemory
            | FailureClass::ModelNotFound
            | FailureClass::ContextOverflow
    )
}

/// The catalogue's remedies reduced to what can be done at the endpoint `url`: options whose
/// every change is [`settable`] stay; the others become operator instructions (not safe: the
/// retry they lead to changes nothing threadcycle controls); a retry unchanged is always offered.
pub fn within_reach(
    url: &str,
    engine: EngineKind,
    class: FailureClass,
    options: Vec<RemedyOption>,
) -> Vec<RemedyOption> {
    let mut kept = Vec::new();
    let mut instructions = Vec::new();
    for o in options {
        match &o.action {
            RemedyAction::Retry { set } if !set.iter().all(|s| settable(engine, s)) => instructions.push(opt(
                format!("on the engine at {url}, yourself: {} — then retry unchanged", o.summary),
                &format!(
                    "{}; threadcycle did not start this engine and cannot change how it runs (restart it with the change, then choose this)",
                    o.rationale
                ),
                false,
                RemedyAction::Retry { set: vec![] },
            )),
            _ => kept.push(o),
        }
    }
    if !kept.iter().any(|o| matches!(o.action, RemedyAction::CoolDown { .. })) {
        kept.push(opt(
            "retry unchanged after 30 s".into(),
            "the engine is not threadcycle's to reconfigure; another client's load or a passing fault may have caused this",
            may_pass(class),
            RemedyAction::CoolDown { seconds: 30 },
        ));
    }
    kept.extend(instructions);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{auto_choice, diagnose};
    use protocol::messages::Escalation;
    use protocol::plan::{Plan, Policy};
    use protocol::results::Evidence;
    use protocol::settings::{KvCacheType, Settings};

    const URL: &str = "http://127.0.0.1:11434";

    fn esc(engine: EngineKind, failure: &str) -> Escalation {
        let plan = Plan::from_toml(&format!(
            "name='t'\n[[models]]\nname='m'\nengine='{}'\nruntime='endpoint'\nurl='{URL}'\ntag='codellama:7b'\n[[prompts]]\nid='p'\ntext='x'\n",
            if engine.speaks_ollama() { "ollama" } else { "openai" }
        ))
        .unwrap();
        let settings = Settings::planned(&plan, &plan.models[0]);
        Escalation {
            model: "m".into(),
            attempt: 1,
            failure: failure.into(),
            suspected: FailureClass::Other,
            evidence: Evidence::default(),
            target: Some(format!("endpoint:{URL}")),
            endpoint: Some(URL.into()),
            engine,
            settings,
            max_attempts: 3,
            policy: Policy::default(),
        }
    }

    fn changes(o: &RemedyOption) -> Vec<Setting> {
        match &o.action {
            RemedyAction::Retry { set } => set.clone(),
            _ => vec![],
        }
    }

    #[test]
    fn at_an_openai_endpoint_no_change_of_the_engines_settings_is_proposed() {
        // The same failure a started llama-server would answer with fewer GPU layers and q8_0.
        let e = esc(EngineKind::OpenAi, "cudaMalloc failed: out of memory");
        let d = diagnose(&e, &Evidence::default());
        assert_eq!(d.class, FailureClass::GpuOutOfMemory);
        for o in &d.options {
            assert!(changes(o).iter().all(|s| settable(EngineKind::OpenAi, s)), "{o:?}");
        }
        assert!(!d.options.iter().any(|o| !changes(o).is_empty()), "{:?}", d.options);
        let instr = d.options.iter().find(|o| o.summary.contains("KV cache q8_0")).expect("an instruction");
        assert!(instr.summary.starts_with(&format!("on the engine at {URL}, yourself")), "{}", instr.summary);
        assert!(!instr.safe);
        // auto does not retry unchanged into the same out-of-memory: it skips.
        assert_eq!(auto_choice(&d, 1, 3).action, RemedyAction::Skip);
    }

    #[test]
    fn at_an_ollama_endpoint_request_options_stay_and_server_settings_become_instructions() {
        let e = esc(EngineKind::Ollama, "model requires more system memory (38.2 GiB) than is available (30.1 GiB)");
        let d = diagnose(&e, &Evidence::default());
        assert_eq!(d.class, FailureClass::HostOutOfMemory);
        // The context goes with each request: threadcycle can halve it, and auto does.
        let auto = auto_choice(&d, 1, 3);
        assert_eq!(changes(auto), vec![Setting::Context(2048)], "{:?}", d.options);
        // The KV cache type is the server's (OLLAMA_KV_CACHE_TYPE): an instruction.
        let kv = d.options.iter().find(|o| o.summary.contains("OLLAMA_KV_CACHE_TYPE")).expect("kv instruction");
        assert!(kv.summary.contains(URL) && !kv.safe && changes(kv).is_empty(), "{kv:?}");
        assert!(!d.options.iter().any(|o| changes(o).contains(&Setting::KvCacheType(KvCacheType::Q8_0))));
    }

    #[test]
    fn a_transient_failure_at_an_endpoint_is_retried_unchanged() {
        let e = Escalation { suspected: FailureClass::EngineUnhealthy, ..esc(EngineKind::OpenAi, "weird") };
        let d = diagnose(&e, &Evidence::default());
        // The load-timeout remedy is the client's own: kept.
        assert!(
            d.options.iter().any(|o| matches!(changes(o).as_slice(), [Setting::LoadTimeoutS(_)])),
            "{:?}",
            d.options
        );
        let e = Escalation { suspected: FailureClass::EngineExited, ..esc(EngineKind::OpenAi, "connection reset") };
        let d = diagnose(&e, &Evidence::default());
        assert!(matches!(auto_choice(&d, 1, 3).action, RemedyAction::CoolDown { .. }), "{:?}", d.options);
    }
}
