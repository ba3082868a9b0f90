//! Tests of the Reader's checks: the allocation test's judgement, models read from an Ollama
//! store, downloads still needed, and the concurrent phase's fit.

use super::allocation::{ALLOC_PEAK, allocation_outcome, allocation_script};
use super::facts::{downloads_check, downloads_needed};
use super::*;
use crate::fit::HostCapacity;
use protocol::plan::Plan;
use protocol::results::Fit;
use std::collections::BTreeMap;
use std::path::Path;

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|l| l.to_string()).collect()
}

#[test]
fn the_allocation_passes_only_when_dd_read_its_whole_block_and_the_cgroup_held_it() {
    let full = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak 3223322624"]);
    assert_eq!(allocation_outcome(Some(0), false, &full, 3072), Ok(3_223_322_624));
    // What `dd bs=3000M count=1` does without iflag=fullblock: one short read of about 2 GiB.
    let short = lines(&["0+1 records in", "0+1 records out", "tc-alloc-peak 2149580800"]);
    let e = allocation_outcome(Some(0), false, &short, 3000).unwrap_err();
    assert!(e.contains("did not read its 3000 MiB block in full"), "{e}");
    // A peak under the amount: the pages did not stay in the container's memory.
    let low = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak 1048576"]);
    assert!(allocation_outcome(Some(0), false, &low, 3072).unwrap_err().contains("peaked at 1048576 bytes"));
    let no_peak = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak "]);
    assert!(allocation_outcome(Some(0), false, &no_peak, 1).unwrap_err().contains("did not report"));
    assert!(allocation_outcome(Some(137), false, &[], 3072).unwrap_err().contains("OOM killer"));
    assert!(allocation_outcome(Some(0), true, &full, 3072).unwrap_err().contains("OOM killer"));
    let bad = lines(&["dd: invalid argument 'iflag=fullblock'"]);
    assert!(allocation_outcome(Some(1), false, &bad, 3072).unwrap_err().contains("invalid argument"));
}

/// A store under `dir` holding `tag` whose model layer is `gguf` (linked, not copied).
fn store_with(dir: &Path, tag: &str, gguf: &Path) {
    let digest = "ab".repeat(32);
    let manifest = crate::store::manifest_path(dir, tag).expect("a valid name");
    std::fs::create_dir_all(manifest.parent().expect("parent")).expect("mkdir");
    std::fs::create_dir_all(dir.join("blobs")).expect("mkdir");
    std::os::unix::fs::symlink(gguf, dir.join(format!("blobs/sha256-{digest}"))).expect("link");
    let size = std::fs::metadata(gguf).expect("model").len();
    std::fs::write(
        manifest,
        format!(r#"{{"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{digest}","size":{size}}}]}}"#),
    )
    .expect("manifest");
}

fn ollama_plan(store: &Path, tags: &[&str]) -> Plan {
    let models: String = tags
        .iter()
        .enumerate()
        .map(|(i, t)| format!("[[models]]\nname = \"m{i}\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"{t}\"\nimage = \"ollama/ollama:0.12.6\"\n"))
        .collect();
    let text = format!(
        "name = \"p\"\n[host]\nmodel_store = \"{}\"\n{models}[[prompts]]\nid = \"a\"\ntext = \"hi\"\n",
        store.display()
    );
    Plan::from_toml(&text).expect("valid plan")
}

#[test]
fn the_demo_model_in_an_ollama_store_is_read_from_its_gguf_and_needs_no_download() {
    let dir = tempfile::tempdir().expect("temp dir");
    store_with(dir.path(), "gemma3:270m", &testkit::demo_model());
    let plan = ollama_plan(dir.path(), &["gemma3:270m", "codellama:34b", "someone/unknown:1b"]);
    let (verdicts, checks) = plan_verdicts(&plan, &HostCapacity::default());
    let c = checks.iter().find(|c| c.name == "model.m0").expect("a model check for the stored model");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("read from the Ollama store") && c.measured.starts_with("gemma3"), "{c:?}");
    assert_eq!(verdicts.len(), 3);
    let needed = downloads_needed(&plan);
    assert_eq!(needed.len(), 2, "{needed:?}");
    assert!(needed[0].0 == "codellama:34b" && needed[0].1.is_some_and(|b| b > 15 << 30), "{needed:?}");
    assert_eq!(needed[1], ("someone/unknown:1b".to_string(), None));
    // 1 GiB free: codellama alone does not fit.
    let c = downloads_check(&plan, 1 << 30).expect("a downloads check");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("codellama:34b, someone/unknown:1b") && c.detail.contains("size unknown"), "{c:?}");
    // Plenty free, one size unknown: a warning, not a pass.
    assert_eq!(downloads_check(&plan, 1 << 40).expect("check").status, CheckStatus::Warn);
    // Everything stored: nothing to check.
    assert_eq!(downloads_check(&ollama_plan(dir.path(), &["gemma3:270m"]), 0), None);
    // No TEMPLATE layer: Ollama sends the bare prompt, a warning naming the consequence.
    let template = |plan: &Plan| {
        let (_, checks) = plan_verdicts(plan, &HostCapacity::default());
        checks.into_iter().find(|c| c.name == protocol::results::chat_template_check("m0")).expect("a template check")
    };
    let c = template(&plan);
    assert_eq!((c.status, c.measured.as_str()), (CheckStatus::Warn, "no template layer"), "{c:?}");
    assert!(c.detail.contains("{{ .Prompt }}") && c.detail.contains("not assessed"), "{c:?}");
    // With Ollama's gemma3 template and stop parameters, as `ollama pull gemma3:270m` stores them.
    let blob =
        |hex: &str, text: &str| std::fs::write(dir.path().join(format!("blobs/sha256-{hex}")), text).expect("blob");
    let (t, p) = ("cd".repeat(32), "ef".repeat(32));
    blob(
        &t,
        "{{- range .Messages }}<start_of_turn>{{ .Role }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
    );
    blob(&p, r#"{"stop":["<end_of_turn>"],"temperature":1,"top_k":64,"top_p":0.95}"#);
    let manifest = crate::store::manifest_path(dir.path(), "gemma3:270m").expect("path");
    let text = std::fs::read_to_string(&manifest).expect("manifest").replace(
        "]}",
        &format!(r#",{{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{t}","size":1}},{{"mediaType":"application/vnd.ollama.image.params","digest":"sha256:{p}","size":1}}]}}"#),
    );
    std::fs::write(&manifest, text).expect("manifest");
    let c = template(&plan);
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.measured.starts_with("template layer (") && c.detail.contains("\"<end_of_turn>\""), "{c:?}");
    assert!(c.detail.contains("system message is dropped"), "{c:?}");
}

#[test]
fn the_allocation_script_reads_one_full_block_and_prints_the_peak() {
    let s = allocation_script(25600);
    assert!(s.starts_with("dd if=/dev/zero of=/dev/null bs=25600M count=1 iflag=fullblock"), "{s}");
    assert!(s.contains("memory.peak") && s.contains("memory.max_usage_in_bytes") && s.contains(ALLOC_PEAK), "{s}");
}

fn plan_with_pair() -> Plan {
    let model = |name: &str| {
        format!(
            "[[concurrent.models]]\nname = \"{name}\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"llama3.1:8b\"\nimage = \"ollama/ollama:0.12.6\"\n"
        )
    };
    let text = format!(
        "name = \"p\"\n[[models]]\nname = \"m\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"llama3.1:8b\"\nimage = \"ollama/ollama:0.12.6\"\n[[prompts]]\nid = \"a\"\ntext = \"hi\"\n[concurrent]\nlevels = [1]\n{}{}",
        model("x"),
        model("y")
    );
    Plan::from_toml(&text).expect("valid plan")
}

fn cpu_only(ram: u64) -> HostCapacity {
    HostCapacity { gpus_free_vram: Vec::new(), ram_available: ram, container_limit: None }
}

#[test]
fn the_concurrent_pair_fits_where_both_fit_at_once_and_not_where_only_one_does() {
    let plan = plan_with_pair();
    let roomy = concurrent_fit(&plan, &cpu_only(256 << 30)).expect("a concurrent phase");
    assert_eq!(roomy.fit, Fit::Go, "{roomy:?}");
    assert_eq!(roomy.model, "x + y");
    let one = roomy.ram_bytes.expect("predicted RAM") / 2;
    // Room for one and a half: each fits alone, the two together do not.
    let tight = concurrent_fit(&plan, &cpu_only(one * 3 / 2)).expect("a concurrent phase");
    assert_eq!(tight.fit, Fit::NoGo, "{tight:?}");
    assert!(tight.reason.starts_with("together they need"), "{tight:?}");
    let (alone, _) = plan_verdicts(
        &Plan { models: plan.concurrent.clone().expect("phase").models, ..plan.clone() },
        &cpu_only(one * 3 / 2),
    );
    assert!(alone.iter().all(|v| v.fit == Fit::Go), "{alone:?}");
    // Too small for either: named as such.
    let none = concurrent_fit(&plan, &cpu_only(one / 2)).expect("a concurrent phase");
    assert_eq!(none.fit, Fit::NoGo);
    assert!(none.reason.contains("does not fit even alone"), "{none:?}");
    assert_eq!(concurrent_fit(&Plan { concurrent: None, ..plan }, &cpu_only(1 << 40)), None);
}

/// A two-block llama as Ollama 0.12.6's `/api/show` describes it (arrays over five emptied).
fn show_body() -> serde_json::Value {
    let mut tensors = vec![
        serde_json::json!({"name": "token_embd.weight", "type": "Q8_0", "shape": [256, 1000]}),
        serde_json::json!({"name": "output_norm.weight", "type": "F32", "shape": [256]}),
    ];
    for b in 0..2 {
        tensors
            .push(serde_json::json!({"name": format!("blk.{b}.attn_q.weight"), "type": "Q8_0", "shape": [256, 256]}));
    }
    serde_json::json!({
        "modelfile": "FROM x", "details": {"format": "gguf", "family": "llama", "quantization_level": "Q8_0"},
        "model_info": {"general.architecture": "llama", "general.file_type": 7, "llama.block_count": 2,
            "llama.context_length": 4096, "llama.embedding_length": 256, "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2, "tokenizer.ggml.tokens": []},
        "tensors": tensors, "capabilities": ["completion"],
    })
}

fn endpoint_plan(url: &str) -> Plan {
    Plan::from_toml(&format!(
        "name='t'\n[defaults]\ncontext=512\n[[models]]\nname='e'\nengine='ollama'\nruntime='endpoint'\nurl='{url}'\ntag='tiny:1b'\n[[prompts]]\nid='p'\ntext='x'\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn an_ollama_endpoints_fit_is_predicted_from_its_api_show_counting_what_it_holds() {
    use testkit::fake_http::{FakeServer, Route};
    // It holds 1 GiB of RAM in a loaded model; this host has only 1 MiB free besides.
    let ps =
        serde_json::json!({"models": [{"name": "other:7b", "model": "other:7b", "size": 1u64 << 30, "size_vram": 0}]});
    let server = FakeServer::start(vec![
        Route::json("POST", "/api/show", 200, &show_body()),
        Route::json("GET", "/api/ps", 200, &ps),
    ])
    .await
    .unwrap();
    let plan = endpoint_plan(&server.url());
    let shown = ask_endpoints(&plan).await;
    assert_eq!(server.requests()[0].json().unwrap()["model"], "tiny:1b");
    let host = HostCapacity { gpus_free_vram: vec![], ram_available: 1 << 20, container_limit: None };
    let (v, checks) = plan_verdicts_with(&plan, &host, &shown);
    assert_eq!(v[0].source, format!("Ollama /api/show at {}", server.url()));
    assert_ne!(v[0].fit, Fit::NoGo, "the loaded model's 1 GiB is Ollama's to unload: {:?}", v[0]);
    assert_ne!(v[0].fit, Fit::Unknown, "{:?}", v[0]);
    // Q8_0: 34 bytes per 32; F32: 4 each.
    assert_eq!(v[0].weights_bytes, Some(1000 * 256 / 32 * 34 + 256 * 4 + 2 * (256 * 256 / 32 * 34)));
    assert!(v[0].reason.contains("its loaded models hold as free"), "{}", v[0].reason);
    assert!(checks.iter().any(|c| c.name == "model.e" && c.detail.contains("/api/show at")), "{checks:?}");
    // Without what it holds the same host is too small: the prediction is a real one.
    let bare =
        BTreeMap::from([("e".to_string(), EndpointFigures { held: (0, 0), ..shown.get("e").cloned().unwrap() })]);
    let (v, _) = plan_verdicts_with(&plan, &host, &bare);
    assert_eq!(v[0].fit, Fit::NoGo, "{:?}", v[0]);

    // An engine on another machine: figures read, fit not predicted from this host's memory.
    let remote = endpoint_plan("http://192.0.2.7:11434");
    let far = BTreeMap::from([(
        "e".to_string(),
        EndpointFigures { url: "http://192.0.2.7:11434".into(), ..shown.get("e").cloned().unwrap() },
    )]);
    let (v, _) = plan_verdicts_with(&remote, &host, &far);
    assert_eq!(v[0].fit, Fit::Unknown);
    assert!(v[0].reason.contains("another machine") && v[0].weights_bytes.is_some(), "{:?}", v[0]);

    // An engine that does not know the model: unknown, with Ollama's words.
    let missing = FakeServer::start(vec![Route::json(
        "POST",
        "/api/show",
        404,
        &serde_json::json!({"error": "model 'tiny:1b' not found"}),
    )])
    .await
    .unwrap();
    let plan = endpoint_plan(&missing.url());
    let (v, _) = plan_verdicts_with(&plan, &host, &ask_endpoints(&plan).await);
    assert_eq!(v[0].fit, Fit::Unknown);
    assert!(v[0].reason.contains("not found") && v[0].reason.contains("/api/show"), "{}", v[0].reason);
}
