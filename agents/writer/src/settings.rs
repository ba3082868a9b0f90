//! The settings one attempt at a model runs with, and how a remedy changes them.
//!
//! The typed vocabulary and its rules live in `protocol::settings`; this keeps, per model, the
//! changes applied so far and the plan's spec with them in its fields.

use protocol::plan::{ModelSpec, Plan};
use protocol::settings::{Setting, Settings as Effective};

/// A model's effective settings for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The model as planned, with [`Settings::effective`] in its fields.
    pub model: ModelSpec,
    /// The settings in force: the plan's, with every change applied.
    pub effective: Effective,
    /// Changes applied so far, in order.
    pub changes: Vec<Setting>,
}

impl Settings {
    /// The plan's settings for model `m`.
    pub fn planned(plan: &Plan, m: &ModelSpec) -> Self {
        let effective = Effective::planned(plan, m);
        Self { model: effective.applied_to(m), effective, changes: Vec::new() }
    }

    /// Applies one change from a remedy or the operator; a value out of bounds is an error and
    /// changes nothing.
    pub fn apply(&mut self, change: &Setting) -> Result<(), String> {
        self.effective.apply(change)?;
        self.model = self.effective.applied_to(&self.model);
        self.changes.push(change.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::from_toml(
            "name='t'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\n[[prompts]]\nid='p'\ntext='x'\n",
        )
        .unwrap()
    }

    #[test]
    fn remedies_change_settings_and_are_recorded() {
        let p = plan();
        let mut s = Settings::planned(&p, &p.models[0]);
        let changes = [
            Setting::MemoryLimitGb(2.0),
            Setting::Env { name: "OLLAMA_KV_CACHE_TYPE".into(), value: "q8_0".into() },
            Setting::Context(2048),
        ];
        for c in &changes {
            s.apply(c).unwrap();
        }
        assert_eq!(s.model.memory_limit_gb, Some(2.0));
        assert_eq!(s.effective.context, 2048);
        assert_eq!(s.model.env["OLLAMA_KV_CACHE_TYPE"], "q8_0");
        assert_eq!(s.changes, changes);
        let before = s.clone();
        assert!(s.apply(&Setting::Context(1)).is_err());
        assert_eq!(s, before, "a refused change leaves the settings and the record as they were");
    }
}
