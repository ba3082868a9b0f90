//! The settings one attempt at a model runs with, and how a remedy changes them.

use protocol::plan::{ModelSpec, Plan};

/// A model's effective settings for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The model as planned, with remedies applied.
    pub model: ModelSpec,
    /// Context window.
    pub context: u32,
    /// Seconds the engine may take to become healthy.
    pub load_timeout_s: u64,
    /// Parallel request slots in the engine.
    pub parallel: u32,
    /// Changes applied so far, as `key=value`.
    pub changes: Vec<String>,
}

impl Settings {
    /// The plan's settings for model `m`.
    pub fn planned(plan: &Plan, m: &ModelSpec) -> Self {
        Self {
            model: m.clone(),
            context: plan.context_for(m),
            load_timeout_s: plan.defaults.load_timeout_s,
            parallel: plan.defaults.parallel,
            changes: Vec::new(),
        }
    }

    /// Settings as `key=value` pairs, for Debug to reason about.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let m = &self.model;
        let mut v = vec![
            ("engine".to_string(), format!("{:?}", m.engine)),
            ("runtime".to_string(), format!("{:?}", m.runtime)),
            ("model".to_string(), m.model_ref().to_string()),
            ("context".to_string(), self.context.to_string()),
            ("load_timeout_s".to_string(), self.load_timeout_s.to_string()),
        ];
        if let Some(l) = m.memory_limit_gb {
            v.push(("memory_limit_gb".into(), l.to_string()));
        }
        if let Some(l) = m.gpu_layers {
            v.push(("gpu_layers".into(), l.to_string()));
        }
        if let Some(t) = m.threads {
            v.push(("threads".into(), t.to_string()));
        }
        for (k, val) in &m.env {
            v.push((format!("env.{k}"), val.clone()));
        }
        v
    }

    /// Applies one `key=value` change from a remedy; unknown keys and bad values are errors.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |what: &str| -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{key}` needs a {what}, got `{value}`"))
        };
        match key {
            "memory_limit_gb" => {
                let v = num("number of GB")?;
                if v < 0.0625 {
                    return Err(format!("memory_limit_gb must be at least 0.0625, got {v}"));
                }
                self.model.memory_limit_gb = Some(v);
            }
            "context" => {
                let v = num("token count")? as u32;
                if v < 128 {
                    return Err(format!("context must be at least 128, got {v}"));
                }
                self.context = v;
            }
            "gpu_layers" => {
                self.model.gpu_layers =
                    Some(value.parse().map_err(|_| format!("gpu_layers needs an integer, got `{value}`"))?)
            }
            "threads" => self.model.threads = Some(num("thread count")? as u32),
            "load_timeout_s" => self.load_timeout_s = num("number of seconds")? as u64,
            "tag" => self.model.tag = Some(value.to_string()),
            "model_path" => self.model.model_path = Some(value.to_string()),
            k if k.starts_with("env.") && k.len() > 4 => {
                self.model.env.insert(k[4..].to_string(), value.to_string());
            }
            k if k.starts_with("arg") => self.model.args.push(value.to_string()),
            other => {
                return Err(format!(
                    "unknown setting `{other}`: expected memory_limit_gb, context, gpu_layers, threads, load_timeout_s, tag, model_path, env.NAME or arg"
                ));
            }
        }
        self.changes.push(format!("{key}={value}"));
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
        s.apply("memory_limit_gb", "2").unwrap();
        s.apply("env.OLLAMA_KV_CACHE_TYPE", "q8_0").unwrap();
        s.apply("context", "2048").unwrap();
        assert_eq!(s.model.memory_limit_gb, Some(2.0));
        assert_eq!(s.context, 2048);
        assert_eq!(s.changes, vec!["memory_limit_gb=2", "env.OLLAMA_KV_CACHE_TYPE=q8_0", "context=2048"]);
        assert!(s.apply("colour", "red").unwrap_err().contains("unknown setting `colour`"));
        assert!(s.apply("context", "-1").is_err());
    }
}
