//! Turning streamed generations into measurements: per-request figures and per-prompt summaries.
//!
//! Definitions (shown in the reports): TTFT is request sent → first content chunk, measured by
//! the client; TPOT is (end-to-end − TTFT) / (tokens − 1); client decode tokens/s is its inverse;
//! the engine's own decode and prefill rates are kept beside them, never mixed.

use host::engine::Generation;
use protocol::results::{AnswerAnalysis, BlobRef, Percentiles, PromptSummary, RunResult, Stat};

/// Characters of each answer kept inline as an excerpt (the full answer is a blob).
pub const EXCERPT_CHARS: usize = 400;

/// The figures of one measured request.
pub fn run_result(
    prompt_id: &str,
    repetition: u32,
    nonce: &str,
    g: &Generation,
    analysis: AnswerAnalysis,
    answer: Option<BlobRef>,
) -> RunResult {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let ttft_ms = ms(g.ttft);
    let e2e_ms = ms(g.e2e);
    let tokens = g.output_tokens.unwrap_or(g.chunk_times.len() as u32);
    let decode_ms = e2e_ms - ttft_ms;
    let tpot_ms = (tokens > 1 && decode_ms > 0.0).then(|| decode_ms / f64::from(tokens - 1));
    let gaps: Vec<f64> = g.chunk_times.windows(2).map(|w| ms(w[1].saturating_sub(w[0]))).collect();
    RunResult {
        prompt_id: prompt_id.to_string(),
        repetition,
        nonce: nonce.to_string(),
        ttft_ms,
        e2e_ms,
        tpot_ms,
        itl_ms: Percentiles::of(&gaps),
        output_tokens: tokens,
        prompt_tokens: g.prompt_tokens,
        client_decode_tps: tpot_ms.map(|t| 1000.0 / t),
        engine_decode_tps: g.engine_decode_tps,
        engine_prefill_tps: g.engine_prefill_tps,
        engine_prompt_ms: g.engine_prompt_ms,
        finish_reason: g.finish_reason.clone(),
        analysis,
        answer,
        excerpt: g.text.chars().take(EXCERPT_CHARS).collect(),
    }
}

/// Mean, spread and flags per prompt, in the order prompts first appear.
pub fn summarise(runs: &[RunResult], cv_flag: f64) -> Vec<PromptSummary> {
    let mut ids: Vec<&str> = Vec::new();
    for r in runs {
        if !ids.contains(&r.prompt_id.as_str()) {
            ids.push(&r.prompt_id);
        }
    }
    ids.into_iter()
        .map(|id| {
            let rs: Vec<&RunResult> = runs.iter().filter(|r| r.prompt_id == id).collect();
            let stat = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                let xs: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
                Stat::of(&xs, cv_flag)
            };
            PromptSummary {
                prompt_id: id.to_string(),
                ttft_ms: stat(&|r| Some(r.ttft_ms)),
                e2e_ms: stat(&|r| Some(r.e2e_ms)),
                client_decode_tps: stat(&|r| r.client_decode_tps),
                engine_decode_tps: stat(&|r| r.engine_decode_tps),
                engine_prefill_tps: stat(&|r| r.engine_prefill_tps),
                output_tokens: stat(&|r| Some(f64::from(r.output_tokens))),
                words: stat(&|r| Some(f64::from(r.analysis.words))),
            }
        })
        .collect()
}

/// A fresh nonce per repetition, placed first so no cached prefix flatters prefill.
pub fn with_nonce(prompt: &str, nonce: &str) -> String {
    format!("[benchmark run {nonce}]\n\n{prompt}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gen_with(ttft: u64, gaps: &[u64], tokens: Option<u32>) -> Generation {
        let mut t = ttft;
        let mut times = vec![Duration::from_millis(t)];
        for g in gaps {
            t += g;
            times.push(Duration::from_millis(t));
        }
        Generation {
            text: "answer".into(),
            ttft: Duration::from_millis(ttft),
            e2e: Duration::from_millis(t),
            chunk_times: times,
            output_tokens: tokens,
            engine_decode_tps: Some(50.0),
            ..Default::default()
        }
    }

    #[test]
    fn tpot_and_client_rate_follow_the_definitions() {
        let g = gen_with(100, &[20, 20, 20, 20], Some(5));
        let r = run_result("p", 1, "n", &g, AnswerAnalysis::default(), None);
        assert_eq!(r.ttft_ms, 100.0);
        assert_eq!(r.e2e_ms, 180.0);
        assert_eq!(r.tpot_ms, Some(20.0));
        assert_eq!(r.client_decode_tps, Some(50.0));
        assert_eq!(r.itl_ms.map(|p| p.p50), Some(20.0));
        assert_eq!(r.engine_decode_tps, Some(50.0));
    }

    #[test]
    fn one_token_has_no_tpot() {
        let g = gen_with(100, &[], Some(1));
        let r = run_result("p", 1, "n", &g, AnswerAnalysis::default(), None);
        assert_eq!(r.tpot_ms, None);
        assert_eq!(r.client_decode_tps, None);
    }

    #[test]
    fn summaries_flag_spread() {
        let runs: Vec<RunResult> = [100, 100, 300]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                run_result("p", i as u32 + 1, "n", &gen_with(*t, &[10], Some(2)), AnswerAnalysis::default(), None)
            })
            .collect();
        let s = summarise(&runs, 0.10);
        assert_eq!(s.len(), 1);
        let ttft = s[0].ttft_ms.unwrap();
        assert_eq!(ttft.n, 3);
        assert!((ttft.mean - 166.666).abs() < 0.01);
        assert!(ttft.unstable);
        assert!(!s[0].client_decode_tps.unwrap().unstable);
    }
}
