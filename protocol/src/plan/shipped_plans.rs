//! The plans in `plans/` parse, and the large-model plan sends the operator's prompts word for
//! word: the texts below are copied from the operator's plan document as issue 22 quotes it.

use super::{ClaimMetric, Plan};

/// The document's laboratory automation prompt.
const LAB_AUTOMATION: &str = "Analyze and document a comprehensive laboratory automation system including: 1) Complete system architecture with component interactions, 2) Database schema optimization with performance recommendations, 3) API integration patterns with authentication and security, 4) Deployment procedures with troubleshooting protocols, 5) Monitoring and alerting configuration, 6) Scaling considerations for enterprise deployment. Provide detailed technical specifications, code examples, and implementation guidance throughout.";

/// The document's Proxmox homelab documentation prompt.
const PROXMOX: &str = "Create comprehensive technical documentation for a Proxmox-based homelab infrastructure including ZFS storage architecture, container orchestration patterns, GPU acceleration configuration, monitoring stack integration, and troubleshooting procedures. Include code examples, configuration files, and step-by-step implementation guides.";

/// The document's enterprise AI deployment analysis prompt.
const ENTERPRISE: &str = "Conduct a comprehensive enterprise AI deployment analysis including competitive positioning against GPT-4 and Claude APIs, technical architecture for multi-tenant deployment, financial modeling with 3-tier scaling strategy, risk assessment and mitigation planning, implementation roadmap with specific milestones, and detailed ROI calculations. Provide executive summary, technical specifications, and actionable recommendations.";

fn plan(text: &str) -> Plan {
    Plan::from_toml(text).unwrap_or_else(|e| panic!("a shipped plan does not parse: {e}"))
}

#[test]
fn the_large_model_plan_sends_the_documents_prompts_byte_for_byte() {
    let p = plan(include_str!("../../../plans/large-models.toml"));
    let texts: Vec<&str> = p.prompts.iter().map(|x| x.text.as_str()).collect();
    assert_eq!(texts, [LAB_AUTOMATION, PROXMOX, ENTERPRISE]);
    assert!(p.prompts.iter().all(|x| x.system.is_none()), "the document sends no system message");
    for x in &p.prompts {
        assert!(!x.required_topics.is_empty(), "{} has no rubric", x.id);
        for t in &x.required_topics {
            let in_prompt = x.text.to_lowercase().contains(&t.to_lowercase());
            assert!(in_prompt, "{}: topic `{t}` is not from the prompt's own enumeration", x.id);
        }
    }
}

#[test]
fn the_large_model_plan_keeps_its_limits_concurrent_phase_criteria_and_claims() {
    let p = plan(include_str!("../../../plans/large-models.toml"));
    let large: Vec<_> = p.models.iter().filter(|m| !m.baseline).collect();
    let limits: Vec<Option<f64>> = large.iter().map(|m| m.memory_limit_gb).collect();
    assert_eq!(limits, [Some(28.0), Some(28.0), Some(30.0)]);
    // The 6.7B/7B models answer the prompts once alone, so the improvement claim is measured.
    let baselines: Vec<(&str, u32)> =
        p.models.iter().filter(|m| m.baseline).map(|m| (m.name.as_str(), p.repetitions_for(m))).collect();
    assert_eq!(baselines, [("deepseek-coder-6-7b", 1), ("codellama-7b", 1)]);
    assert_eq!(p.baseline_model().map(|m| m.name.as_str()), Some("deepseek-coder-6-7b"));
    assert_eq!(p.concurrent.as_ref().map(|c| c.levels.clone()), Some(vec![1, 2, 4]));
    assert_eq!((p.criteria.min_gpu_util_pct, p.criteria.max_temp_c), (Some(80.0), Some(70.0)));
    let metrics: std::collections::BTreeSet<ClaimMetric> = p.claims.iter().filter_map(|c| c.metric()).collect();
    for m in [
        ClaimMetric::GpuUtilPct,
        ClaimMetric::GpuTempC,
        ClaimMetric::AllocatableGb,
        ClaimMetric::DiskFreeGb,
        ClaimMetric::UsdPerMtok,
        ClaimMetric::ReferenceUsdPerMtok,
        ClaimMetric::Words,
        ClaimMetric::BaselineImprovement,
    ] {
        assert!(metrics.contains(&m), "no claim about {}", m.name());
    }
    assert!(large.iter().all(|m| m.projected.ram_gb.is_some() && m.projected.words.is_some()));
}

#[test]
fn every_shipped_plan_parses() {
    let extended = plan(include_str!("../../../plans/large-models-extended.toml"));
    assert!(extended.prompts.iter().all(|x| x.text.len() > 1000), "the extended plan keeps the long prompts");
    let demo = plan(include_str!("../../../plans/demo.toml"));
    assert!(!demo.claims.is_empty(), "the demo plan carries claims a demo run can measure");
}

#[test]
fn the_ollama_endpoint_plan_measures_the_running_service_as_found() {
    let p = plan(include_str!("../../../plans/ollama-endpoint.toml"));
    let found: Vec<(&str, Option<&str>)> = p.models.iter().map(|m| (m.model_ref(), m.url.as_deref())).collect();
    let url = Some("http://127.0.0.1:11434");
    assert_eq!(found, [("deepseek-coder:6.7b", url), ("codellama:7b", url)]);
    assert!(p.models.iter().all(|m| m.runtime == super::Runtime::Endpoint && m.engine == super::EngineKind::Ollama));
    let large = plan(include_str!("../../../plans/large-models.toml"));
    assert_eq!(p.prompts, large.prompts, "the same prompts and rubrics as the large-model plan");
}
