//! `[standard]`: the standard test `llama-bench` users compare on, run per model on the engine
//! that was just measured: `pp512` (prefill of a 512-token prompt) and `tg128` (128 tokens
//! generated from an empty context), each repeated and given as mean ± standard deviation of
//! tokens/s, the way `llama-bench` prints them (`tools/llama-bench/llama-bench.cpp`,
//! `test_prompt` and `test_gen`). Figures line up with community tables because they are the
//! engine's own counters for the same two workloads.

use super::{Plan, PlanError};
use serde::{Deserialize, Serialize};

/// The standard test's settings; `repetitions = 0` turns it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandardTest {
    /// Times each test runs (`llama-bench -r`, which defaults to 5); 0: no standard test.
    pub repetitions: u32,
    /// Prompt tokens of the prefill test (`llama-bench -p`, 512).
    pub prompt_tokens: u32,
    /// Generated tokens of the decode test (`llama-bench -n`, 128).
    pub gen_tokens: u32,
}

impl Default for StandardTest {
    fn default() -> Self {
        StandardTest { repetitions: 3, prompt_tokens: 512, gen_tokens: 128 }
    }
}

impl StandardTest {
    /// Whether the plan asks for the test at all.
    pub fn enabled(&self) -> bool {
        self.repetitions > 0
    }

    /// The prefill test's name as llama-bench prints it (`pp512`).
    pub fn pp_name(&self) -> String {
        format!("pp{}", self.prompt_tokens)
    }

    /// The decode test's name as llama-bench prints it (`tg128`).
    pub fn tg_name(&self) -> String {
        format!("tg{}", self.gen_tokens)
    }
}

impl Plan {
    pub(super) fn validate_standard(&self) -> Result<(), PlanError> {
        let s = &self.standard;
        let bad =
            |field: &str, problem: String| Err(PlanError::Invalid { field: format!("standard.{field}"), problem });
        if s.repetitions > 100 {
            return bad("repetitions", format!("expected 0 (no standard test) to 100, got {}", s.repetitions));
        }
        if !(1..=65_536).contains(&s.prompt_tokens) {
            return bad("prompt_tokens", format!("expected 1 to 65536, got {}", s.prompt_tokens));
        }
        if !(1..=65_536).contains(&s.gen_tokens) {
            return bad("gen_tokens", format!("expected 1 to 65536, got {}", s.gen_tokens));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{Plan, PlanError};

    const BASE: &str = "name = \"t\"\n[[models]]\nname = \"m\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"/m.gguf\"\n[[prompts]]\nid = \"p\"\ntext = \"hi\"\n";

    fn field_of(extra: &str) -> Option<String> {
        match Plan::from_toml(&format!("{BASE}{extra}")) {
            Ok(_) => None,
            Err(PlanError::Invalid { field, .. }) => Some(field),
            Err(e) => Some(format!("other: {e}")),
        }
    }

    #[test]
    fn the_standard_test_defaults_to_llama_bench_pp512_tg128() {
        let p = Plan::from_toml(BASE).unwrap();
        assert!(p.standard.enabled());
        assert_eq!((p.standard.pp_name(), p.standard.tg_name()), ("pp512".to_string(), "tg128".to_string()));
        let off = Plan::from_toml(&format!("{BASE}[standard]\nrepetitions = 0\n")).unwrap();
        assert!(!off.standard.enabled());
    }

    #[test]
    fn bad_standard_settings_name_their_field() {
        assert_eq!(field_of("[standard]\nrepetitions = 500\n").as_deref(), Some("standard.repetitions"));
        assert_eq!(field_of("[standard]\ngen_tokens = 0\n").as_deref(), Some("standard.gen_tokens"));
        assert_eq!(field_of("[standard]\nprompt_tokens = 0\n").as_deref(), Some("standard.prompt_tokens"));
        assert!(field_of("[standard]\nrepetitons = 2\n").is_some(), "an unknown key is refused");
        // A context too small for the test is no plan error: the Writer says why it did not run.
        assert_eq!(field_of("[defaults]\ncontext = 512\n"), None);
    }
}
