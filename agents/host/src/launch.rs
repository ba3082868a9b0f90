//! One builder per engine: llama-server's command line; Ollama's container (store mount and
//! environment) and its request `options`.
//!
//! The Writer starts every engine from the [`Launch`] these return and stores that record in
//! the result; the deployment guide prints the record. Nothing else builds an engine command,
//! so the guide's command is the one that ran.
//!
//! Ollama facts relied on (v0.12.6, cited in `docs/ENGINE-FACTS.md`): the image runs as root
//! with no `USER`, so its store defaults to `/root/.ollama/models` (`envconfig/config.go:85-98`,
//! `Dockerfile:177-201`); `OLLAMA_MODELS` overrides it; the request `options` keys are
//! `num_ctx`, `num_gpu`, `num_thread` (`api/types.go:410-417`), where `num_gpu` -1 means
//! "Ollama decides" (`api/types.go:852-853`).

use protocol::launch::{ContainerLaunch, Launch};
use protocol::plan::GpuRequest;
use protocol::settings::{FlashAttention, Settings};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Where the Ollama image keeps its home (`-v ollama:/root/.ollama` in Ollama's docs).
pub const OLLAMA_HOME_IN_CONTAINER: &str = "/root/.ollama";
/// Where the Ollama image keeps its models: `$HOME/.ollama/models` for root.
pub const OLLAMA_MODELS_IN_CONTAINER: &str = "/root/.ollama/models";
/// The named volume used when the plan names no store and the host has none.
pub const OLLAMA_DEFAULT_VOLUME: &str = "threadcycle-ollama";

/// What llama-server is told to do.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaServerArgs<'a> {
    /// The GGUF path as the engine sees it.
    pub model: &'a str,
    /// Address to listen on.
    pub host: &'a str,
    /// Port to listen on.
    pub port: u16,
    /// The attempt's settings: context per slot (`-c` is context × slots), slots (`-np`),
    /// threads (`-t`), GPU layers (`-ngl`, left out when negative or unset), batch (`-b` and
    /// `-ub`), KV cache type (`-ctk`/`-ctv`), flash attention (`-fa`), chat template
    /// (`--chat-template`), and the plan's extra
    /// arguments, last so they win.
    pub settings: &'a Settings,
}

/// llama-server's arguments (after the binary).
pub fn llama_server_args(a: &LlamaServerArgs) -> Vec<String> {
    let s = a.settings;
    let slots = s.slots.max(1);
    let mut v: Vec<String> =
        vec!["--model".into(), a.model.into(), "--host".into(), a.host.into(), "--port".into(), a.port.to_string()];
    // llama-server's -c is shared by its slots: every slot gets the planned context.
    v.extend([
        "-c".into(),
        (s.context.saturating_mul(slots)).to_string(),
        "-np".into(),
        slots.to_string(),
        "--metrics".into(),
        "--no-webui".into(),
        // libllama's INFO lines (model, KV and compute buffers, offloaded layers: the engine's
        // memory account) print only from verbosity 4; the default 3 prints none of them
        // (`L:common/log.cpp:532-550`, `L:common/arg.cpp:3930-3962`).
        "-lv".into(),
        "4".into(),
    ]);
    if let Some(t) = s.threads {
        v.extend(["-t".into(), t.to_string()]);
    }
    if let Some(l) = s.gpu_layers.filter(|l| *l >= 0) {
        v.extend(["-ngl".into(), l.to_string()]);
    }
    if let Some(b) = s.batch {
        v.extend(["-b".into(), b.to_string(), "-ub".into(), b.to_string()]);
    }
    if let Some(k) = s.kv_cache_type {
        v.extend(["-ctk".into(), k.as_str().into(), "-ctv".into(), k.as_str().into()]);
    }
    if let Some(f) = s.flash_attention {
        v.extend(["-fa".into(), f.as_str().into()]);
    }
    if let Some(t) = &s.chat_template {
        v.extend(["--chat-template".into(), t.clone()]);
    }
    v.extend(s.args.iter().cloned());
    v
}

/// llama-server as a host process on 127.0.0.1.
pub fn llama_server_process(binary: &str, args: &LlamaServerArgs) -> Launch {
    Launch {
        env: args.settings.env.clone(),
        program: binary.to_string(),
        args: llama_server_args(args),
        ..Default::default()
    }
}

/// How the Ollama container reaches a model store: the bind (or volume) and where it lands.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMount {
    /// `-v` argument.
    pub bind: String,
    /// `OLLAMA_MODELS` inside the container.
    pub models_dir: String,
}

/// The mount for `store`, a host folder or a volume name. A models folder (the one holding
/// `manifests/` and `blobs/`, e.g. `~/.ollama/models` or `/usr/share/ollama/.ollama/models`)
/// is mounted at the container's models folder, so an existing store is reused as it is; an
/// Ollama home (`~/.ollama`, `home_layout`) or a named volume at the container's home.
pub fn ollama_store_mount(store: Option<&str>, home_layout: bool) -> StoreMount {
    let home = |src: &str| StoreMount {
        bind: format!("{src}:{OLLAMA_HOME_IN_CONTAINER}"),
        models_dir: OLLAMA_MODELS_IN_CONTAINER.into(),
    };
    match store.map(str::trim).filter(|s| !s.is_empty()) {
        None => home(OLLAMA_DEFAULT_VOLUME),
        Some(s) if !s.contains('/') || home_layout => home(s),
        Some(s) => StoreMount {
            bind: format!("{}:{OLLAMA_MODELS_IN_CONTAINER}", s.trim_end_matches('/')),
            models_dir: OLLAMA_MODELS_IN_CONTAINER.into(),
        },
    }
}

/// Whether `dir` is an Ollama home (`models/` inside, no `manifests/` or `blobs/` of its own).
pub fn is_ollama_home(dir: &Path) -> bool {
    dir.join("models").is_dir() && !dir.join("manifests").is_dir() && !dir.join("blobs").is_dir()
}

/// An existing Ollama store on this host, in Ollama's own order: `$OLLAMA_MODELS`, the user's
/// `~/.ollama/models`, the Linux service's `/usr/share/ollama/.ollama/models`.
pub fn existing_ollama_store(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let candidates = [
        env("OLLAMA_MODELS").filter(|s| !s.trim().is_empty()),
        env("HOME").map(|h| format!("{}/.ollama/models", h.trim_end_matches('/'))),
        Some("/usr/share/ollama/.ollama/models".to_string()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| Path::new(p).join("manifests").is_dir() || Path::new(p).join("blobs").is_dir())
}

/// What every engine container is made of, whatever the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerBase<'a> {
    /// Container name.
    pub name: &'a str,
    /// Image.
    pub image: &'a str,
    /// Memory limit, bytes (the settings' `memory_limit_gb`).
    pub memory_limit_bytes: Option<u64>,
    /// GPUs.
    pub gpus: GpuRequest,
    /// A user-defined network.
    pub network: Option<String>,
    /// Host port, `None` = Docker picks.
    pub host_port: Option<u16>,
}

fn container(
    base: &ContainerBase,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    port: u16,
    bind: String,
) -> Launch {
    Launch {
        env,
        program: base.image.to_string(),
        args,
        container: Some(ContainerLaunch {
            name: base.name.to_string(),
            memory_limit_bytes: base.memory_limit_bytes,
            memory_swap_bytes: None,
            cpuset: None,
            gpus: base.gpus.clone(),
            network: base.network.clone(),
            host_port: base.host_port,
            container_port: port,
            binds: vec![bind],
        }),
        request_options: BTreeMap::new(),
        endpoint: None,
    }
}

/// llama-server in a container: the model's folder mounted read-only at `/models`, listening
/// on 0.0.0.0:8080; `args.model` is the path inside the container.
pub fn llama_server_container(base: &ContainerBase, model_dir: &str, args: &LlamaServerArgs) -> Launch {
    let args = LlamaServerArgs { host: "0.0.0.0", port: 8080, ..args.clone() };
    container(base, args.settings.env.clone(), llama_server_args(&args), 8080, format!("{model_dir}:/models:ro"))
}

/// The server environment both Ollama runtimes get: the plan's, the model kept loaded while it
/// is measured (`OLLAMA_KEEP_ALIVE=-1`) and as many parallel slots as the plan measures, unless
/// the plan's environment says otherwise; the typed flash-attention and KV-cache settings as
/// Ollama's server variables (`OLLAMA_FLASH_ATTENTION`, `OLLAMA_KV_CACHE_TYPE`: server-wide,
/// `envconfig/config.go`), over any plan variable of the same name.
fn ollama_env(s: &Settings) -> BTreeMap<String, String> {
    let mut env = s.env.clone();
    env.entry("OLLAMA_KEEP_ALIVE".into()).or_insert_with(|| "-1".into());
    env.entry("OLLAMA_NUM_PARALLEL".into()).or_insert_with(|| s.slots.max(1).to_string());
    match s.flash_attention {
        Some(FlashAttention::On) => env.insert("OLLAMA_FLASH_ATTENTION".into(), "1".into()),
        Some(FlashAttention::Off) => env.insert("OLLAMA_FLASH_ATTENTION".into(), "0".into()),
        Some(FlashAttention::Auto) => env.remove("OLLAMA_FLASH_ATTENTION"),
        None => None,
    };
    if let Some(k) = s.kv_cache_type {
        env.insert("OLLAMA_KV_CACHE_TYPE".into(), k.as_str().into());
    }
    env
}

/// The Ollama container: the image's own `serve`, the store mounted and named in
/// `OLLAMA_MODELS`, listening on 11434.
pub fn ollama_container(base: &ContainerBase, store: &StoreMount, s: &Settings) -> Launch {
    let mut env = ollama_env(s);
    env.entry("OLLAMA_MODELS".into()).or_insert_with(|| store.models_dir.clone());
    container(base, env, Vec::new(), 11434, store.bind.clone())
}

/// `ollama serve` as a host process on 127.0.0.1:`port` (`OLLAMA_HOST`), its store in
/// `OLLAMA_MODELS` when one is given and the plan's env names none.
pub fn ollama_process(binary: &str, s: &Settings, port: u16, models_dir: Option<&str>) -> Launch {
    let mut env = ollama_env(s);
    env.insert("OLLAMA_HOST".into(), format!("127.0.0.1:{port}"));
    if let Some(dir) = models_dir {
        env.entry("OLLAMA_MODELS".into()).or_insert_with(|| dir.to_string());
    }
    let mut args = vec!["serve".to_string()];
    args.extend(s.args.iter().cloned());
    Launch { env, program: binary.to_string(), args, ..Default::default() }
}

/// The model's load-time settings as Ollama request `options` (`api/types.go:410-417`):
/// `num_ctx` = the context, `num_gpu` = GPU layers (only when set and ≥ 0; otherwise Ollama
/// decides), `num_thread` = threads, `num_batch` = batch. Sent with every request: a change of
/// any of them makes Ollama reload the model.
pub fn ollama_options(s: &Settings) -> BTreeMap<String, Value> {
    let mut o = BTreeMap::from([("num_ctx".to_string(), json!(s.context))]);
    if let Some(l) = s.gpu_layers.filter(|l| *l >= 0) {
        o.insert("num_gpu".into(), json!(l));
    }
    if let Some(t) = s.threads.filter(|t| *t > 0) {
        o.insert("num_thread".into(), json!(t));
    }
    if let Some(b) = s.batch.filter(|b| *b > 0) {
        o.insert("num_batch".into(), json!(b));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let plan = protocol::plan::Plan::from_toml(
            "name='t'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\n[[prompts]]\nid='p'\ntext='x'\n",
        )
        .unwrap();
        Settings::planned(&plan, &plan.models[0])
    }

    #[test]
    fn llama_server_gets_the_context_of_every_slot_and_its_endpoints() {
        let s = Settings {
            context: 2048,
            slots: 2,
            threads: Some(4),
            gpu_layers: Some(20),
            args: vec!["--mlock".into()],
            ..settings()
        };
        let a = LlamaServerArgs { model: "/m/x.gguf", host: "127.0.0.1", port: 8123, settings: &s };
        assert_eq!(
            llama_server_args(&a).join(" "),
            "--model /m/x.gguf --host 127.0.0.1 --port 8123 -c 4096 -np 2 --metrics --no-webui -lv 4 -t 4 -ngl 20 --mlock"
        );
        let auto = Settings { context: 2048, gpu_layers: Some(-1), threads: None, slots: 0, ..settings() };
        assert_eq!(
            llama_server_args(&LlamaServerArgs { settings: &auto, ..a.clone() }).join(" "),
            "--model /m/x.gguf --host 127.0.0.1 --port 8123 -c 2048 -np 1 --metrics --no-webui -lv 4"
        );
        let tuned = Settings {
            batch: Some(256),
            kv_cache_type: Some(protocol::settings::KvCacheType::Q8_0),
            flash_attention: Some(FlashAttention::On),
            ..auto
        };
        assert_eq!(
            llama_server_args(&LlamaServerArgs { settings: &tuned, ..a }).join(" "),
            "--model /m/x.gguf --host 127.0.0.1 --port 8123 -c 2048 -np 1 --metrics --no-webui -lv 4 \
             -b 256 -ub 256 -ctk q8_0 -ctv q8_0 -fa on"
        );
    }

    #[test]
    fn an_existing_models_folder_is_mounted_at_the_containers_models_folder() {
        let m = ollama_store_mount(Some("/home/u/.ollama/models"), false);
        assert_eq!(m.bind, "/home/u/.ollama/models:/root/.ollama/models");
        assert_eq!(m.models_dir, "/root/.ollama/models");
        let service = ollama_store_mount(Some("/usr/share/ollama/.ollama/models/"), false);
        assert_eq!(service.bind, "/usr/share/ollama/.ollama/models:/root/.ollama/models");
        // An Ollama home, or a named volume, is the container's home: models under models/.
        assert_eq!(ollama_store_mount(Some("/home/u/.ollama"), true).bind, "/home/u/.ollama:/root/.ollama");
        assert_eq!(ollama_store_mount(Some("ollama"), false).bind, "ollama:/root/.ollama");
        assert_eq!(ollama_store_mount(None, false).bind, "threadcycle-ollama:/root/.ollama");
    }

    #[test]
    fn an_ollama_home_is_told_from_a_models_folder() {
        let d = std::env::temp_dir().join(format!("tc-launch-{}", std::process::id()));
        std::fs::create_dir_all(d.join("home/models/blobs")).unwrap();
        std::fs::create_dir_all(d.join("home/models/manifests")).unwrap();
        assert!(is_ollama_home(&d.join("home")));
        assert!(!is_ollama_home(&d.join("home/models")));
        let env = |k: &str| (k == "OLLAMA_MODELS").then(|| d.join("home/models").display().to_string());
        assert_eq!(existing_ollama_store(&env), Some(d.join("home/models").display().to_string()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_ollama_container_names_its_store_and_keeps_the_plans_env() {
        let store = ollama_store_mount(Some("/srv/ollama/models"), false);
        let env = BTreeMap::from([("OLLAMA_KV_CACHE_TYPE".to_string(), "q8_0".to_string())]);
        let s = Settings { env, slots: 1, ..settings() };
        let base = ContainerBase {
            name: "tc-c-llama3",
            image: "ollama/ollama:0.12.6",
            memory_limit_bytes: Some(30 << 30),
            gpus: GpuRequest::All,
            network: None,
            host_port: None,
        };
        let l = ollama_container(&base, &store, &s);
        assert_eq!(
            l.command_line(),
            "docker run -d --name tc-c-llama3 --memory=30720m --memory-swap=30720m --gpus=all -p 127.0.0.1::11434 \
             -v /srv/ollama/models:/root/.ollama/models -e OLLAMA_KEEP_ALIVE=-1 -e OLLAMA_KV_CACHE_TYPE=q8_0 \
             -e OLLAMA_MODELS=/root/.ollama/models -e OLLAMA_NUM_PARALLEL=1 ollama/ollama:0.12.6"
        );
    }

    #[test]
    fn plan_settings_become_ollama_options() {
        let s = |context, gpu_layers, threads, batch| Settings { context, gpu_layers, threads, batch, ..settings() };
        assert_eq!(
            serde_json::to_value(ollama_options(&s(8192, Some(30), Some(8), Some(256)))).unwrap(),
            json!({"num_ctx": 8192, "num_gpu": 30, "num_thread": 8, "num_batch": 256})
        );
        assert_eq!(
            serde_json::to_value(ollama_options(&s(4096, Some(0), None, None))).unwrap(),
            json!({"num_ctx": 4096, "num_gpu": 0})
        );
        assert_eq!(
            serde_json::to_value(ollama_options(&s(4096, Some(-1), None, None))).unwrap(),
            json!({"num_ctx": 4096})
        );
    }

    #[test]
    fn typed_flash_attention_and_kv_cache_reach_ollamas_server_env() {
        let s = Settings {
            flash_attention: Some(FlashAttention::On),
            kv_cache_type: Some(protocol::settings::KvCacheType::Q4_0),
            env: BTreeMap::from([("OLLAMA_KV_CACHE_TYPE".to_string(), "f16".to_string())]),
            ..settings()
        };
        let l = ollama_process("ollama", &s, 11500, None);
        assert_eq!(l.env["OLLAMA_FLASH_ATTENTION"], "1");
        assert_eq!(l.env["OLLAMA_KV_CACHE_TYPE"], "q4_0");
        assert_eq!(l.env["OLLAMA_HOST"], "127.0.0.1:11500");
    }
}
