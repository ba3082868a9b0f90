//! `report.html` in a real browser: headless Chromium (Debian's `chromium`) opens the file from
//! disk, and the test reads the DOM it rendered. The report must show its charts, have a nav and
//! a section per page, and show a model's hostile answer as text: the `<script>` and the
//! `onerror` handler in it must not run. A control page without escaping or CSP shows that the
//! same payload *is* seen when it runs, so a pass is not an artefact of `--dump-dom`. The test
//! also saves a screenshot to `target/report-screenshot.png`.
//!
//! `make test` installs Chromium (`make browser`); without it the test fails and says so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use threadcycle_documentation::html::page_anchor;
use threadcycle_documentation::render::{PAGES, ReportInput, render_reports};

#[path = "fixtures/report.rs"]
mod fixture;

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// What a hostile model could answer: a script, an event handler, a fence break-out, an iframe.
const HOSTILE: &str = "Sure! <script>document.title='PWNED';document.body.setAttribute('data-pwned','1')</script>\n\
<img src=x onerror=\"document.title='PWNED';document.body.setAttribute('data-pwned','1')\">\n\
```\n</code></pre><script>document.title='PWNED'</script>\n````\n\
<iframe src=\"javascript:document.title='PWNED'\"></iframe> & done";

/// The one report fixture with a payload that would show if it ran: qwen's first
/// `lab-architecture` excerpt is hostile, and so is its first `rust-parser` answer, available in
/// full.
fn input() -> ReportInput {
    let mut input = fixture::report();
    let qwen = &mut input.results.models[0];
    let run = qwen.runs.iter_mut().find(|r| r.prompt_id == "lab-architecture" && r.repetition == 1);
    run.expect("qwen's first lab-architecture run").excerpt = HOSTILE.to_string();
    input.answers.insert(
        "answers/qwen25-coder-14b/rust-parser-1".to_string(),
        format!("FULL ANSWER {HOSTILE}\n\n````rust\nfn main() {{}}\n````\n"),
    );
    input
}

/// A fresh scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("threadcycle-browser-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `make browser` (apt-get install chromium) — the report's HTML \
         is checked in a real browser"
    );
}

/// Runs headless Chromium on `page` with `extra` arguments and a fresh profile; returns stdout.
/// Kills Chromium's process group when it takes longer than [`CHROMIUM_TIMEOUT`].
fn chromium(page: &Path, extra: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let profile = Scratch::new("profile");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if start.elapsed() > CHROMIUM_TIMEOUT {
            // The whole group: Chromium's renderer and GPU helpers too.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match status {
        None => {
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?} on {}; stderr tail:\n{tail}", page.display())
        }
        Some(s) if !s.success() => {
            panic!("chromium failed ({s}) on {}; stderr tail:\n{tail}", page.display())
        }
        Some(_) => stdout,
    }
}

/// The rendered report, written to a scratch folder the way the agent writes it.
fn write_report(dir: &Path) -> PathBuf {
    for f in render_reports(&input()) {
        let path = dir.join(&f.path);
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
        std::fs::write(&path, &f.bytes).expect("write report file");
    }
    let html = dir.join("report.html");
    assert!(html.is_file(), "render_reports produced no report.html");
    html
}

/// The text between `<tag` … `>` and `</tag>`, for the first such element.
fn element_text<'a>(dom: &'a str, tag: &str) -> Option<&'a str> {
    let open = dom.find(&format!("<{tag}"))?;
    let start = open + dom[open..].find('>')? + 1;
    let end = start + dom[start..].find(&format!("</{tag}>"))?;
    Some(&dom[start..end])
}

/// The opening tag of the first `<tag …>` element.
fn opening_tag<'a>(dom: &'a str, tag: &str) -> Option<&'a str> {
    let open = dom.find(&format!("<{tag}"))?;
    let end = open + dom[open..].find('>')? + 1;
    Some(&dom[open..end])
}

#[test]
fn the_control_page_shows_that_a_running_script_is_seen() {
    require_chromium();
    let dir = Scratch::new("control");
    // The payload unescaped and without a CSP: here it must run, or the report's check proves
    // nothing.
    let page = dir.0.join("control.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>control</title></head><body><p>hi</p>\
         <script>document.title='PWNED';document.body.setAttribute('data-pwned','1')</script>\
         </body></html>",
    )
    .expect("write control page");
    let dom = chromium(&page, &["--dump-dom".to_string()]);
    assert_eq!(element_text(&dom, "title"), Some("PWNED"), "{dom}");
    assert!(opening_tag(&dom, "body").is_some_and(|b| b.contains("data-pwned=\"1\"")), "{dom}");
}

#[test]
fn report_html_renders_in_chromium_without_running_model_output() {
    require_chromium();
    let dir = Scratch::new("report");
    let page = write_report(&dir.0);
    let source = std::fs::read_to_string(&page).expect("read report.html");
    assert!(source.contains("http-equiv=\"Content-Security-Policy\""), "report.html has no CSP");

    let dom = chromium(&page, &["--dump-dom".to_string()]);
    assert!(dom.contains("<nav>") && dom.contains("</main>"), "chromium returned no report DOM:\n{dom}");

    // Nothing from the answer ran.
    let title = element_text(&dom, "title").expect("the DOM has a <title>");
    let input = input();
    let expected = format!("{} — cycle {}", input.results.verification.plan.name, input.cycle);
    assert_eq!(title, expected, "the title changed: a script from a model answer ran");
    let body = opening_tag(&dom, "body").expect("the DOM has a <body>");
    assert!(!body.contains("data-pwned"), "the body got data-pwned: a script from a model answer ran: {body}");
    assert!(!dom.contains("data-pwned=\""), "an element got data-pwned: a script from a model answer ran");
    assert!(!dom.to_ascii_lowercase().contains("<script"), "a <script> element is in the DOM");
    for tag in ["<img", "<iframe"] {
        assert!(!dom.contains(tag), "a {tag} element is in the DOM");
    }

    // …and it is shown as text, escaped, both the full answer and the excerpt.
    let escaped = "&lt;script&gt;document.title='PWNED';document.body.setAttribute('data-pwned','1')&lt;/script&gt;";
    assert!(dom.matches(escaped).count() >= 2, "the hostile answer and excerpt are not both shown as escaped text");
    assert!(dom.contains("&lt;img src=x onerror=\"document.title='PWNED'"), "the <img onerror> is not shown as text");
    assert!(dom.contains("FULL ANSWER"), "the full answer is not shown");
    assert!(dom.contains("&lt;iframe src=\"javascript:"), "the <iframe> is not shown as text");

    // The charts are there, inline.
    let svgs = dom.matches("<svg").count();
    assert!(svgs >= 2, "only {svgs} <svg> charts in the DOM");
    for label in ["Decode tokens/s by model", "Time to first token by model", "GPU temperature over time"] {
        assert!(dom.contains(&format!("aria-label=\"{label}")), "the chart {label:?} is not in the DOM");
    }

    // A nav link and a section for each page.
    for (path, title) in PAGES {
        let anchor = page_anchor(path);
        assert!(dom.contains(&format!("<a href=\"#{anchor}\">{title}</a>")), "no nav link to {path}");
        assert!(dom.contains(&format!("<section id=\"{anchor}\">")), "no section for {path}");
    }

    // A screenshot, kept where a person can look at it.
    let shot = dir.0.join("report.png");
    chromium(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    // A blank 1280×2000 page compresses to about 12 KB; the report's first screen is ~300 KB.
    assert!(png.len() > 50 * 1024, "the screenshot is only {} bytes: the page is probably blank", png.len());
    let keep = target_dir().join("report-screenshot.png");
    std::fs::write(&keep, &png).expect("keep the screenshot in target/");
    eprintln!("screenshot: {}", keep.display());
}

/// Cargo's target folder: the test binary runs from `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}
