//! The Ollama model store as Ollama 0.12.6 lays it out, read without Ollama running, so the
//! Reader can say before anything is pulled which models are already on disk (and how big they
//! are), and read a stored model's GGUF header instead of a built-in table.
//!
//! Layout (`reference/engine-source-facts.md` A1): `<models>/manifests/<host>/<namespace>/<model>/<tag>`
//! (`types/model/name.go:275-294`, `server/modelpath.go:106`) and `<models>/blobs/sha256-<hex>`
//! (`server/modelpath.go:125-135`). Names default to `registry.ollama.ai` / `library` / `latest`
//! (`types/model/name.go:37-41`); the tag follows the last `:` after the last `/` (`:146-147`). A
//! manifest lists `config` and `layers` with `mediaType`, `digest` (`sha256:<hex>`) and `size`
//! (`server/manifest.go:17-26`); the GGUF is the `application/vnd.ollama.image.model` layer
//! (`server/images.go:358-360`). The store is `$OLLAMA_MODELS`, by default `$HOME/.ollama/models`
//! (`envconfig/config.go:85-98`); the Linux service's is `/usr/share/ollama/.ollama/models`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The media type of the layer that holds the GGUF file.
const MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// The media types of the layers that hold a prompt template (`prompt` is the old name):
/// Ollama parses the blob's text as the model's Go template (`server/images.go:370-379`).
const TEMPLATE_LAYERS: [&str; 2] = ["application/vnd.ollama.image.template", "application/vnd.ollama.image.prompt"];

/// The media type of the layer that holds the model's default options, `stop` among them
/// (`server/images.go:387-396`).
const PARAMS_LAYER: &str = "application/vnd.ollama.image.params";

/// The most bytes read from a template, params or config blob (they are a few KiB).
const SMALL_BLOB: u64 = 1 << 20;

/// A model found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its manifest file.
    pub manifest: PathBuf,
    /// The GGUF blob (the model layer), when the manifest names one and it is on disk.
    pub model_blob: Option<PathBuf>,
    /// The config and every layer, as the manifest gives their sizes.
    pub bytes: u64,
    /// How Ollama will format prompts for it.
    pub format: PromptFormat,
}

/// How Ollama 0.12.6 turns a chat into the model's prompt, read from the stored model: a
/// built-in renderer named in the config blob (`renderer`, `server/images.go:275`, used at
/// `:221`), else the template layer, else `{{ .Prompt }}` (`template/template.go:94`, the
/// default set at `server/images.go:331`), which drops the roles and the system message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptFormat {
    /// The config's `renderer`, when it names one.
    pub renderer: Option<String>,
    /// The template layer's text, when there is one (an unreadable blob is an error).
    pub template: Option<Result<String, String>>,
    /// The params layer's `stop` sequences: where Ollama ends a turn besides the model's own
    /// end-of-sequence token.
    pub stop: Vec<String>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Option<Layer>,
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

/// The manifest path of `name` (e.g. `deepseek-coder:33b`, `user/model:tag`,
/// `host.example/ns/model:tag`) under `store`, or `None` for a name Ollama would refuse.
pub fn manifest_path(store: &Path, name: &str) -> Option<PathBuf> {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "latest"),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (host, ns, model) = match parts.as_slice() {
        [m] => ("registry.ollama.ai", "library", *m),
        [n, m] => ("registry.ollama.ai", *n, *m),
        [h, n, m] => (*h, *n, *m),
        _ => return None,
    };
    let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0']);
    [host, ns, model, tag]
        .iter()
        .all(|s| safe(s))
        .then(|| store.join("manifests").join(host).join(ns).join(model).join(tag))
}

/// The blob file of a `sha256:<hex>` digest.
fn blob_path(store: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:").or_else(|| digest.strip_prefix("sha256-"))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| store.join("blobs").join(format!("sha256-{hex}")))
}

/// `name` in `store`: `Ok(None)` when it is not there, an error naming the file when its manifest
/// is there but unreadable.
pub fn find(store: &Path, name: &str) -> Result<Option<Stored>, String> {
    let Some(manifest) = manifest_path(store, name) else {
        return Err(format!("`{name}` is not a model name Ollama accepts"));
    };
    let text = match std::fs::read(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", manifest.display())),
    };
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not an Ollama manifest: {e}", manifest.display()))?;
    let bytes = m.config.iter().chain(&m.layers).map(|l| l.size).fold(0u64, u64::saturating_add);
    let model_blob = m
        .layers
        .iter()
        .find(|l| l.media_type == MODEL_LAYER)
        .and_then(|l| blob_path(store, &l.digest))
        .filter(|p| p.is_file());
    let format = prompt_format(store, &m);
    Ok(Some(Stored { manifest, model_blob, bytes, format }))
}

/// A small blob's bytes (a template, params or config), or why not.
fn small_blob(store: &Path, digest: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let path = blob_path(store, digest).ok_or_else(|| format!("`{digest}` is not a sha256 digest"))?;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(SMALL_BLOB).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

/// The renderer, template and stop sequences a stored model's layers give Ollama.
fn prompt_format(store: &Path, m: &Manifest) -> PromptFormat {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        renderer: String,
    }
    #[derive(Deserialize)]
    struct Params {
        #[serde(default)]
        stop: Vec<String>,
    }
    let renderer = m
        .config
        .as_ref()
        .and_then(|c| small_blob(store, &c.digest).ok())
        .and_then(|b| serde_json::from_slice::<Config>(&b).ok())
        .map(|c| c.renderer)
        .filter(|r| !r.is_empty());
    let layer = |types: &[&str]| m.layers.iter().rfind(|l| types.contains(&l.media_type.as_str()));
    let template =
        layer(&TEMPLATE_LAYERS).map(|l| small_blob(store, &l.digest).map(|b| String::from_utf8_lossy(&b).into_owned()));
    let stop = layer(&[PARAMS_LAYER])
        .and_then(|l| small_blob(store, &l.digest).ok())
        .and_then(|b| serde_json::from_slice::<Params>(&b).ok())
        .map(|p| p.stop)
        .unwrap_or_default();
    PromptFormat { renderer, template, stop }
}

/// Where Ollama keeps its models on this machine: the plan's `host.model_store` when it names one
/// (the caller passes it), else `$OLLAMA_MODELS`, else `$HOME/.ollama/models`, else the Linux
/// service's `/usr/share/ollama/.ollama/models` when only that one exists.
pub fn default_store(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(m) = env("OLLAMA_MODELS").filter(|m| !m.is_empty()) {
        return PathBuf::from(m);
    }
    let home = PathBuf::from(env("HOME").unwrap_or_else(|| "/".into())).join(".ollama/models");
    let service = PathBuf::from("/usr/share/ollama/.ollama/models");
    if !home.exists() && service.exists() { service } else { home }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa";

    #[test]
    fn names_map_to_ollamas_manifest_paths() {
        let s = Path::new("/m");
        let p = |n: &str| manifest_path(s, n).map(|p| p.display().to_string());
        assert_eq!(
            p("deepseek-coder:33b").as_deref(),
            Some("/m/manifests/registry.ollama.ai/library/deepseek-coder/33b")
        );
        assert_eq!(p("llama3.1").as_deref(), Some("/m/manifests/registry.ollama.ai/library/llama3.1/latest"));
        assert_eq!(p("me/tiny:q4").as_deref(), Some("/m/manifests/registry.ollama.ai/me/tiny/q4"));
        assert_eq!(p("hf.co/org/repo:Q4_K_M").as_deref(), Some("/m/manifests/hf.co/org/repo/Q4_K_M"));
        assert_eq!(p("localhost:5000/ns/m").as_deref(), Some("/m/manifests/localhost:5000/ns/m/latest"));
        assert_eq!(p("../../etc:passwd"), None);
        assert_eq!(p("a/b/c/d"), None);
        assert_eq!(p(""), None);
    }

    #[test]
    fn a_stored_model_is_found_with_its_size_and_gguf_blob() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path();
        assert_eq!(find(store, "codellama:34b"), Ok(None));
        let manifest = manifest_path(store, "codellama:34b").expect("path");
        std::fs::create_dir_all(manifest.parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(store.join("blobs")).expect("mkdir");
        std::fs::write(store.join(format!("blobs/sha256-{DIGEST}")), b"GGUF").expect("blob");
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{x}","size":412}},
               "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{DIGEST}","size":19052049728}},
                         {{"mediaType":"application/vnd.ollama.image.license","digest":"sha256:{x}","size":7020}}]}}"#,
            x = "0".repeat(64)
        );
        std::fs::write(&manifest, text).expect("manifest");
        let found = find(store, "codellama:34b").expect("readable").expect("present");
        assert_eq!(found.bytes, 412 + 19_052_049_728 + 7020);
        assert_eq!(found.model_blob, Some(store.join(format!("blobs/sha256-{DIGEST}"))));
        std::fs::write(&manifest, "{not json").expect("manifest");
        assert!(find(store, "codellama:34b").unwrap_err().contains("is not an Ollama manifest"));
    }

    #[test]
    fn the_template_params_and_renderer_layers_say_how_prompts_are_formatted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path();
        std::fs::create_dir_all(store.join("blobs")).expect("mkdir");
        let blob = |n: char, text: &str| {
            let hex = n.to_string().repeat(64);
            std::fs::write(store.join(format!("blobs/sha256-{hex}")), text).expect("blob");
            format!("sha256:{hex}")
        };
        let tpl = "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>";
        let (t, p, c) = (blob('a', tpl), blob('b', r#"{"stop":["<|user|>","<|end|>"]}"#), blob('c', "{}"));
        let write = |name: &str, config: &str, layers: &[(&str, &str)]| {
            let manifest = manifest_path(store, name).expect("path");
            std::fs::create_dir_all(manifest.parent().expect("parent")).expect("mkdir");
            let layers: Vec<String> = layers
                .iter()
                .map(|(ty, d)| {
                    format!(r#"{{"mediaType":"application/vnd.ollama.image.{ty}","digest":"{d}","size":1}}"#)
                })
                .collect();
            let text = format!(r#"{{"config":{{"digest":"{config}","size":2}},"layers":[{}]}}"#, layers.join(","));
            std::fs::write(manifest, text).expect("manifest");
            find(store, name).expect("readable").expect("present").format
        };
        let f = write("chat:7b", &c, &[("template", &t), ("params", &p)]);
        assert_eq!(f.template, Some(Ok(tpl.to_string())));
        assert_eq!(f.stop, ["<|user|>", "<|end|>"]);
        assert_eq!(f.renderer, None);
        // No template layer: Ollama's `{{ .Prompt }}`; a template blob missing is an error.
        assert_eq!(write("base:1b", &c, &[]), PromptFormat::default());
        let missing = write("gone:1b", &c, &[("template", &format!("sha256:{}", "d".repeat(64)))]);
        assert!(missing.template.is_some_and(|t| t.is_err()));
        // A built-in renderer (gpt-oss, qwen3-coder) named in the config blob.
        let r = blob('e', r#"{"model_format":"gguf","renderer":"harmony","parser":"harmony"}"#);
        assert_eq!(write("gpt-oss:20b", &r, &[]).renderer.as_deref(), Some("harmony"));
    }

    #[test]
    fn the_store_is_ollama_models_then_home() {
        let env = |k: &str| match k {
            "OLLAMA_MODELS" => Some("/srv/ollama".to_string()),
            "HOME" => Some("/h".to_string()),
            _ => None,
        };
        assert_eq!(default_store(&env), PathBuf::from("/srv/ollama"));
        let env = |k: &str| (k == "HOME").then(|| "/nonexistent-home".to_string());
        let s = default_store(&env);
        assert!(
            s == Path::new("/nonexistent-home/.ollama/models") || s == Path::new("/usr/share/ollama/.ollama/models")
        );
    }
}
