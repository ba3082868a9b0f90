//! Two GPU hosts simulated on one machine: `up --host small --host big` runs a Reader and a
//! Writer per host, each Reader predicting fit for its own host profile. Main places the models
//! as the predictions say (the long-context model fits only on `big`; the rest balance), the
//! Writers run their shares on real llama-server processes, and Documentation writes one report
//! that names both hosts.

use super::support::*;
use std::collections::BTreeMap;
use std::path::Path;

fn profile(dir: &Path, name: &str, ram_gb: f64) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text =
        format!("name = \"{name}\"\nvram_gb = 0\nram_gb = {ram_gb}\ngpu_bandwidth_gbs = 0\nram_bandwidth_gbs = 20\n");
    std::fs::write(&p, text).expect("write profile");
    p
}

#[test]
fn a_plan_splits_across_two_hosts_by_predicted_fit_and_one_report_names_both() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = model().display().to_string();
    // `small` has 1 GiB for engines (3 GiB less the 2 GiB kept for the system): Gemma at 1k
    // context (about 0.3 GiB) fits, at 32k context (about 1.2 GiB) it does not. The concurrent
    // pair at 16k context fits there one at a time but not together.
    let small = profile(tmp.path(), "small", 3.0);
    let big = profile(tmp.path(), "big", 16.0);
    let model_table = |name: &str, context: u32| {
        format!(
            "[[models]]\nname = \"{name}\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\ncontext = {context}\n"
        )
    };
    let concurrent = |name: &str| {
        format!(
            "[[concurrent.models]]\nname = \"{name}\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\ncontext = 16384\n"
        )
    };
    let rest = format!(
        "{}\n{}\n[concurrent]\nlevels = [1]\n\n{}\n{}",
        model_table("gemma-long", 32768),
        model_table("gemma-b", 1024),
        concurrent("pair-a"),
        concurrent("pair-b")
    );
    let plan = write_plan(tmp.path(), "multihost", "warmup = false", "", &rest);
    let out = tmp.path().join("out");
    let o = threadcycle()
        .args(["up", "--host", "small", "--host", "big", "--host-profile"])
        .arg(format!("small={}", small.display()))
        .arg("--host-profile")
        .arg(format!("big={}", big.display()))
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", show(&o));
    let dir = cycle_dir(&out);
    let r = results(&dir);

    // Each Reader predicted for its own profile, and said so.
    let hosts = r["hosts"].as_array().expect("every host's verification in results.json");
    let ids: Vec<&str> = hosts.iter().filter_map(|h| h["host"]["host_id"].as_str()).collect();
    assert_eq!(ids, ["small", "big"], "{r}");
    let verdict = |host: usize, model: usize| hosts[host]["verdicts"][model]["fit"].as_str().unwrap_or("?").to_string();
    for (i, h) in hosts.iter().enumerate() {
        let name = ["small", "big"][i];
        let checks = h["checks"].as_array().expect("checks");
        assert!(
            checks.iter().any(|c| c["name"] == "host.profile"
                && c["measured"].as_str().is_some_and(|m| m.contains(&format!("`{name}`")))),
            "host {name} did not predict for its profile: {h}"
        );
    }
    assert_eq!(verdict(0, 1), "no_go", "gemma-long on small: {r}");
    for (host, model) in [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)] {
        assert_eq!(verdict(host, model), "go", "host {host} model {model}: {r}");
    }

    // Main placed each model where it fits: the long one on the only host it fits, the others
    // balanced (fewest models, then least predicted memory), and the pair where it fits together.
    let placement = &r["verification"]["placement"];
    let placed: BTreeMap<&str, &str> = placement["models"]
        .as_array()
        .expect("placement")
        .iter()
        .map(|p| (p["model"].as_str().unwrap_or("?"), p["host"].as_str().unwrap_or("?")))
        .collect();
    let expected: BTreeMap<&str, &str> = [("gemma", "small"), ("gemma-long", "big"), ("gemma-b", "small")].into();
    assert_eq!(placed, expected, "{placement}");
    assert_eq!(placement["concurrent"], "big", "{placement}");
    assert!(placement["concurrent_reason"].as_str().is_some_and(|s| s.contains("pair-a + pair-b")), "{placement}");

    // Every model measured exactly once, by the Writer of its host (the process engine ran with
    // the model's own context), and the concurrent phase ran on `big`.
    let models = r["models"].as_array().expect("models");
    assert_eq!(models.len(), 3, "{r}");
    for (i, res) in models.iter().enumerate() {
        assert_eq!(res["index"], i as u64, "{res}");
        assert_eq!(res["status"]["state"], "measured", "{res}");
        assert_eq!(res["runs"].as_array().map(Vec::len), Some(1), "one prompt × one repetition: {res}");
    }
    let c = &r["concurrent"];
    assert_eq!(c["levels"].as_array().map(Vec::len), Some(2), "{c}");
    assert_eq!(c["together"].as_array().map(Vec::len), Some(2), "{c}");

    // One report set that names both hosts.
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("report");
    for needle in [
        "| Model | Host | Outcome |",
        "### Host small\n",
        "### Host big\n",
        "## Placement",
        "| Model | Host | Why | small | big |",
        "gemma-long (host big)",
        "Concurrent phase: on host big",
    ] {
        assert!(report.contains(needle), "benchmark-report.md lacks `{needle}`:\n{report}");
    }
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    assert!(guide.contains("## gemma (host small)") && guide.contains("## gemma-long (host big)"), "{guide}");
}
