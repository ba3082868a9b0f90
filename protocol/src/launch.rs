//! How the Writer started an engine, exactly: the record the deployment guide prints.
//!
//! The Writer builds one [`Launch`] per attempt (`host::launch` holds the one builder per
//! engine), starts the engine *from it* and stores it in the result. The reports print it as it
//! is ([`Launch::command_line`]) and never re-derive a command from the plan's settings, so what
//! a reader copies is what was measured.

use crate::plan::GpuRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One engine start, as it ran.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Launch {
    /// Environment the engine got on top of the Writer's (host process) or as `-e` (container).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The binary (host process) or the image (container).
    pub program: String,
    /// The arguments after the binary, or the container's command after the image.
    #[serde(default)]
    pub args: Vec<String>,
    /// The container's settings; `None` for a host process.
    #[serde(default)]
    pub container: Option<ContainerLaunch>,
    /// The generation `options` sent with the first measured request (Ollama's `options`
    /// object; `num_predict` is that prompt's output cap); empty when the engine takes none.
    #[serde(default)]
    pub request_options: BTreeMap<String, serde_json::Value>,
    /// The URL of an engine that was already running (the endpoint runtime): nothing was
    /// started, so there is no command; `program` and `args` are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The `docker run` settings of a containerised engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerLaunch {
    /// Container name.
    pub name: String,
    /// Memory limit, bytes (`--memory`).
    pub memory_limit_bytes: Option<u64>,
    /// Memory plus swap, bytes (`--memory-swap`); `None` = the same as the limit.
    pub memory_swap_bytes: Option<i64>,
    /// CPUs (`--cpuset-cpus`).
    pub cpuset: Option<String>,
    /// GPUs (`--gpus`).
    pub gpus: GpuRequest,
    /// A user-defined network (`--network`).
    pub network: Option<String>,
    /// Host port on 127.0.0.1; `None` = Docker picks one.
    pub host_port: Option<u16>,
    /// The engine's port inside the container.
    pub container_port: u16,
    /// Bind mounts and volumes (`-v host:container[:ro]`).
    pub binds: Vec<String>,
}

impl Launch {
    /// The command as shell words, unquoted: `K=V … binary args…` for a host process,
    /// `docker run -d --name … image args…` for a container.
    pub fn words(&self) -> Vec<String> {
        let Some(c) = &self.container else {
            let mut w: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            w.push(self.program.clone());
            w.extend(self.args.iter().cloned());
            return w;
        };
        let mut w = vec!["docker".to_string(), "run".into(), "-d".into(), "--name".into(), c.name.clone()];
        if let Some(m) = c.memory_limit_bytes {
            w.push(format!("--memory={}m", m >> 20));
            w.push(format!("--memory-swap={}m", c.memory_swap_bytes.map(|s| s >> 20).unwrap_or((m >> 20) as i64)));
        }
        if let Some(cpus) = &c.cpuset {
            w.push(format!("--cpuset-cpus={cpus}"));
        }
        match &c.gpus {
            GpuRequest::All => w.push("--gpus=all".into()),
            GpuRequest::Indices(ix) => {
                w.push(format!("--gpus=\"device={}\"", ix.iter().map(u32::to_string).collect::<Vec<_>>().join(",")))
            }
            GpuRequest::None => {}
        }
        if let Some(n) = &c.network {
            w.push(format!("--network={n}"));
        }
        w.push("-p".into());
        w.push(format!("127.0.0.1:{}:{}", c.host_port.map(|p| p.to_string()).unwrap_or_default(), c.container_port));
        for b in &c.binds {
            w.push("-v".into());
            w.push(b.clone());
        }
        for (k, v) in &self.env {
            w.push("-e".into());
            w.push(format!("{k}={v}"));
        }
        w.push(self.program.clone());
        w.extend(self.args.iter().cloned());
        w
    }

    /// Whether the engine was found already running rather than started (no command ran).
    pub fn was_found_running(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The command as one copy-pasteable shell line (each word quoted when it needs it).
    pub fn command_line(&self) -> String {
        if self.container.is_none() {
            // `NAME='a b' binary`: only the value is quoted, or the shell would take the whole
            // word for the command instead of an assignment.
            let mut w: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={}", shell_word(v))).collect();
            w.push(shell_word(&self.program));
            w.extend(self.args.iter().map(|a| shell_word(a)));
            return w.join(" ");
        }
        self.words().iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
    }

    /// The value after `flag` in [`Launch::args`] (`--port 8080`), if present.
    pub fn arg_value(&self, flag: &str) -> Option<&str> {
        self.args.iter().position(|a| a == flag).and_then(|i| self.args.get(i + 1)).map(String::as_str)
    }
}

/// Quotes one word for a POSIX shell when it needs it (`'…'`, with `'` as `'\''`).
pub fn shell_word(w: &str) -> String {
    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_line_is_env_then_binary_then_args() {
        let l = Launch {
            env: BTreeMap::from([("LLAMA_ARG_X".into(), "a b".into())]),
            program: "/opt/llama-server".into(),
            args: vec!["--model".into(), "/m/x.gguf".into(), "--port".into(), "8080".into()],
            ..Default::default()
        };
        assert_eq!(l.command_line(), "LLAMA_ARG_X='a b' /opt/llama-server --model /m/x.gguf --port 8080");
        assert_eq!(l.arg_value("--port"), Some("8080"));
    }

    #[test]
    fn a_container_line_names_every_docker_setting() {
        let l = Launch {
            env: BTreeMap::from([("OLLAMA_MODELS".into(), "/root/.ollama/models".into())]),
            program: "ollama/ollama:0.12.6".into(),
            args: vec![],
            container: Some(ContainerLaunch {
                name: "tc-c-m".into(),
                memory_limit_bytes: Some(30 << 30),
                gpus: GpuRequest::All,
                container_port: 11434,
                binds: vec!["/home/u/.ollama/models:/root/.ollama/models".into()],
                ..Default::default()
            }),
            request_options: BTreeMap::new(),
            endpoint: None,
        };
        assert_eq!(
            l.command_line(),
            "docker run -d --name tc-c-m --memory=30720m --memory-swap=30720m --gpus=all -p 127.0.0.1::11434 \
             -v /home/u/.ollama/models:/root/.ollama/models -e OLLAMA_MODELS=/root/.ollama/models ollama/ollama:0.12.6"
        );
    }
}
