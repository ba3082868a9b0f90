//! The baseline the larger models are compared with: with `[concurrent] baseline = true`, each
//! model of the concurrent phase also answers the plan's prompts once, alone, in the sequential
//! phase, so "an improvement over the 6.7B model" is measured on the same prompts rather than
//! assumed (the concurrent phase itself records latency and throughput, not answers).

use super::{ModelSpec, Plan};

impl Plan {
    /// Adds each concurrent model to `models` as a baseline answering every prompt once, when
    /// the concurrent phase asks for it. Idempotent: a model whose name is already in `models`
    /// (a plan that went through this before, or one the plan lists itself) is left as it is.
    pub fn add_baselines(&mut self) {
        let Some(c) = self.concurrent.as_ref().filter(|c| c.baseline) else {
            return;
        };
        let extra: Vec<ModelSpec> = c
            .models
            .iter()
            .filter(|m| !self.models.iter().any(|x| x.name == m.name))
            .map(|m| ModelSpec {
                repetitions: Some(m.repetitions.unwrap_or(1)),
                baseline: true,
                keep: false,
                ..m.clone()
            })
            .collect();
        self.models.extend(extra);
    }

    /// Measured repetitions of each prompt for one model.
    pub fn repetitions_for(&self, m: &ModelSpec) -> u32 {
        m.repetitions.unwrap_or(self.defaults.repetitions)
    }

    /// Measured requests in the sequential phase: every model, every prompt, its repetitions.
    pub fn measured_requests(&self) -> u64 {
        let prompts = self.prompts.len() as u64;
        self.models.iter().map(|m| prompts * u64::from(self.repetitions_for(m))).sum()
    }

    /// The model the larger ones are compared with: the smallest (by `params_b`) of the plan's
    /// baseline models, or of all its models when none is marked as one.
    pub fn baseline_model(&self) -> Option<&ModelSpec> {
        let marked = self.models.iter().any(|m| m.baseline);
        self.models
            .iter()
            .enumerate()
            .filter(|(_, m)| !marked || m.baseline)
            .filter_map(|(i, m)| m.params_b.map(|p| (p, i, m)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, _, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    const PLAN: &str = r#"
name = "b"
[defaults]
repetitions = 3
[[models]]
name = "big"
engine = "llama-server"
runtime = "process"
model_path = "/m/big.gguf"
params_b = 33
[[prompts]]
id = "p1"
text = "one"
[[prompts]]
id = "p2"
text = "two"
[concurrent]
levels = [1, 2]
baseline = true
[[concurrent.models]]
name = "small-a"
engine = "llama-server"
runtime = "process"
model_path = "/m/a.gguf"
params_b = 7
[[concurrent.models]]
name = "small-b"
engine = "llama-server"
runtime = "process"
model_path = "/m/b.gguf"
params_b = 6.7
keep = true
"#;

    #[test]
    fn concurrent_models_answer_once_alone_as_baselines() {
        let p = Plan::from_toml(PLAN).unwrap();
        let names: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["big", "small-a", "small-b"]);
        assert!(!p.models[0].baseline && p.models[1].baseline && p.models[2].baseline);
        assert_eq!(p.repetitions_for(&p.models[0]), 3);
        assert_eq!(p.repetitions_for(&p.models[1]), 1);
        // Kept containers belong to the concurrent phase's own deployment, not the baseline's.
        assert!(!p.models[2].keep);
        assert_eq!(p.measured_requests(), 2 * 3 + 2 + 2);
        // The concurrent phase is unchanged.
        assert_eq!(p.concurrent.as_ref().unwrap().models.len(), 2);
        assert_eq!(p.baseline_model().unwrap().name, "small-b");
    }

    #[test]
    fn adding_baselines_twice_adds_nothing_more() {
        let mut p = Plan::from_toml(PLAN).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        p.add_baselines();
        let mut again: Plan = serde_json::from_str(&json).unwrap();
        again.add_baselines();
        assert_eq!(p.models.len(), 3);
        assert_eq!(again, p);
    }

    #[test]
    fn without_the_flag_nothing_is_added_and_the_smallest_model_is_the_baseline() {
        let p = Plan::from_toml(&PLAN.replace("baseline = true\n", "")).unwrap();
        assert_eq!(p.models.len(), 1);
        assert_eq!(p.baseline_model().unwrap().name, "big");
        assert_eq!(p.measured_requests(), 6);
    }

    #[test]
    fn a_model_repetition_count_out_of_range_is_named() {
        let bad = PLAN.replace("params_b = 33", "params_b = 33\nrepetitions = 0");
        let e = Plan::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("models[0].repetitions") && e.contains("1 to 1000"), "{e}");
    }
}
