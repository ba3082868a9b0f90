//! Hostile model output end to end: a stand-in engine (`tests/fixtures/hostile_engine.py`, run
//! by the Writer as the model's `binary`, exactly as it runs llama-server) streams a 10 MiB
//! answer, NUL and control bytes, terminal escapes, invalid UTF-8 and characters split across
//! network writes, markdown/HTML/CSV injection, and an in-stream error full of escapes. The real
//! cycle measures, stores and reports it; every report file must be valid UTF-8 with nothing
//! executable or terminal-controlling in it, the CSV well formed, sizes capped with a note,
//! nothing lost, and the CLI shows the engine's error text defused.

use super::cycle_crash::Cluster;
use super::support::*;
use protocol::operator::CycleState;
use protocol::results::ModelStatus;
use std::path::{Path, PathBuf};

fn hostile_engine() -> PathBuf {
    let py = std::env::split_paths(&path_env()).any(|d| d.join("python3").is_file());
    assert!(py, "python3 is not installed (the hostile engine stand-in is a Python script): apt-get install python3");
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_engine.py")
}

fn hostile_plan(dir: &Path) -> PathBuf {
    let engine = hostile_engine().display().to_string();
    let p = write_plan(
        dir,
        "hostile",
        "load_timeout_s = 30\nrequest_timeout_s = 120",
        &format!("binary = \"{engine}\""),
        &format!(
            "[[models]]\nname = \"hostile-error\"\nengine = \"llama-server\"\nruntime = \"process\"\n\
             model_path = \"{model}\"\nbinary = \"{engine}\"\nargs = [\"--hostile-mode\", \"error\"]\n\n\
             [[prompts]]\nid = \"huge\"\ntext = \"Give a huge answer.\"\n\n\
             [[prompts]]\nid = \"binary\"\ntext = \"Give a binary answer.\"\n\n\
             [[prompts]]\nid = \"inject\"\ntext = \"Give an inject answer.\"\n\n\
             [policy]\ndefault = 'skip'\nmax_attempts = 1\nask_timeout_s = 60\n",
            model = model().display()
        ),
    );
    // The first prompt of write_plan stays (an ordinary answer).
    p
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// Characters that must never reach a rendered report or a terminal: C0 controls other than
/// newline, tab and carriage return (NUL, ESC, BEL, …), DEL and the C1 controls (CSI U+009B …).
fn dangerous(text: &str) -> Option<(usize, char)> {
    text.char_indices()
        .find(|(_, c)| (c.is_control() && !matches!(c, '\n' | '\t' | '\r')) || matches!(*c, '\u{7f}'..='\u{9f}'))
}

fn context(text: &str, at: usize) -> String {
    let mut start = at.saturating_sub(60);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + 60).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    format!("{:?}", &text[start..end])
}

#[test]
fn hostile_model_output_is_stored_capped_and_rendered_safely_everywhere() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("hostile_model_output_is_stored_capped_and_rendered_safely_everywhere");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&hostile_plan(tmp.path()));
    let rec = c.wait_for(&cycle, "the hostile cycle to finish", 400, |r| {
        matches!(r.state, CycleState::Completed | CycleState::Failed { .. })
    });
    assert_eq!(rec.state, CycleState::Completed, "{rec:?}; logs in {}", c.logs.display());
    let dir = c.out.join(&cycle);

    // Measured and nothing lost: every prompt once, the erroring model skipped with a reason.
    let kinds = ["huge", "binary", "inject"];
    // The three hostile answers, plus the second model's engine error.
    s.faults = kinds.len() as u64 + 1;
    s.note("hostile_kinds", format!("{}+error", kinds.join("+")));
    s.check_exactly_once(&c.out, &cycle, &["hello", "huge", "binary", "inject"], 1);
    let r = results(&dir);
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    let erroring = r.models.get(1).expect("the erroring model's result");
    assert_ne!(erroring.status, ModelStatus::Measured, "{erroring:?}");

    // Every file is valid UTF-8; rendered formats carry no control character.
    let files = files_under(&dir);
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        let text = std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", f.display()));
        let ext = f.extension().and_then(|x| x.to_str()).unwrap_or("");
        if ["md", "html", "csv", "svg", "txt"].contains(&ext)
            && let Some((at, ch)) = dangerous(text)
        {
            panic!("{} holds the control character {ch:?} at byte {at}: {}", f.display(), context(text, at));
        }
        assert!(bytes.len() <= 5 << 20, "{} is {} bytes: the 10 MiB answer was not capped", f.display(), bytes.len());
    }

    // The answers as stored: the huge one cut at 4 MiB with a note, the split characters whole.
    let answer = |p: &str| std::fs::read_to_string(dir.join(format!("data/answers/gemma/{p}-r1.txt"))).expect("answer");
    let huge = answer("huge");
    assert!(huge.len() <= 4 << 20 && huge.len() > (4 << 20) - 70_000, "huge answer is {} bytes", huge.len());
    let binary = answer("binary");
    assert!(binary.contains("é→😀"), "a character split across network writes was damaged: {binary:?}");
    assert!(binary.contains("raw[\u{fffd}"), "invalid UTF-8 was not replaced: {binary:?}");
    assert!(binary.contains("NUL[") && binary.contains("RED") && binary.contains("cleared?"), "{binary:?}");
    let inject = answer("inject");
    for piece in ["<script>document.title='pwned'</script>", "| forged | table |", "=HYPERLINK(", "```"] {
        assert!(inject.contains(piece), "the answer lost {piece:?}: {inject:?}");
    }
    let huge_run = m.runs.iter().find(|x| x.prompt_id == "huge").expect("huge run");
    assert_eq!(huge_run.answer.as_ref().map(|a| a.size), Some(huge.len() as u64), "{huge_run:?}");
    let bench = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    assert!(
        bench.contains("1 of 4 answers were longer than the engine client keeps and were cut at 4 MiB"),
        "the report does not say an answer was cut"
    );

    // HTML: nothing executable survives, the text is shown escaped.
    let html = std::fs::read_to_string(dir.join("report.html")).expect("html");
    for raw in ["<script>document", "<img src=x", "<h1>fake heading", "href=\"javascript:"] {
        if let Some(at) = html.find(raw) {
            panic!("report.html holds {raw:?}: {}", context(&html, at));
        }
    }
    assert!(html.contains("&lt;script&gt;"), "the injected script is not shown escaped");
    // Markdown: the model's text only inside code fences (a viewer shows it as text); outside
    // them no raw HTML, no link and no table row of the model's making.
    let mut fenced = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(f).expect("md");
        let outside = outside_fences(&text);
        for raw in ["<script", "<img src=x", "<h1>fake heading", "](javascript:", "| forged | table |", "fence break"] {
            assert!(!outside.contains(raw), "{} holds {raw:?} outside a code fence", f.display());
        }
        fenced += usize::from(text.contains("<script>document.title='pwned'</script>"));
    }
    assert!(fenced >= 1, "the injected answer is not shown (as text) in any markdown report");
    // CSV: well formed (one header and one record per run, the same field count everywhere),
    // formulas defused.
    let csv = std::fs::read_to_string(dir.join("data/results.csv")).expect("csv");
    assert_eq!(csv_records(&csv), 1 + 4, "{csv}");
    let rows = parse_csv(&csv);
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width), "ragged CSV: {rows:?}");
    for row in &rows[1..] {
        for cell in row {
            assert!(!cell.starts_with(['=', '+', '@']), "a formula cell: {cell:?}");
        }
    }

    // The CLI: the erroring engine's text (with terminal escapes) in `escalations` and `status`.
    for args in [vec!["escalations", "--all"], vec!["status", cycle.as_str()], vec!["reports", cycle.as_str()]] {
        let o = threadcycle().args(&args).args(["--nats", &c.nats.url()]).output().expect("cli");
        assert!(o.status.success(), "{}", show(&o));
        let out = String::from_utf8(o.stdout.clone()).expect("CLI output is UTF-8");
        if let Some((at, ch)) = dangerous(&out) {
            panic!("`threadcycle {}` printed {ch:?}: {}", args.join(" "), context(&out, at));
        }
        if args[0] == "escalations" {
            assert!(out.contains("engine exploded"), "the engine's error text is missing: {out}");
        }
    }
}

/// RFC 4180 records and fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let mut row = vec![];
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The markdown text outside fenced code blocks (CommonMark: a fence closes on a line of at
/// least as many backticks as it opened with).
fn outside_fences(md: &str) -> String {
    let mut out = String::new();
    let mut open: Option<usize> = None;
    for line in md.lines() {
        let t = line.trim_start_matches(' ');
        let ticks = t.chars().take_while(|c| *c == '`').count();
        match open {
            None if ticks >= 3 && line.len() - t.len() <= 3 => open = Some(ticks),
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some(n) if ticks >= n && t[ticks..].trim().is_empty() => open = None,
            Some(_) => {}
        }
    }
    assert!(open.is_none(), "a code fence is never closed");
    out
}
