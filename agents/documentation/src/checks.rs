//! Checks on a rendered report folder before it is written: links resolve, tables are tables.
//!
//! Used by the tests and by the agent, which refuses to publish a folder with problems.

use crate::html::options;
use crate::markdown::slug;
use crate::render::ReportFile;
use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Every problem found in the markdown files of `files`, one sentence each; empty when none.
///
/// Each relative link or image must name a produced file (and a heading of it, with a
/// `#fragment`); each table must parse as a table whose every source row has as many cells as
/// its header; a line that starts with `|` outside a table and a code block is reported too.
pub fn check_reports(files: &[ReportFile]) -> Vec<String> {
    let texts: BTreeMap<&str, String> = files
        .iter()
        .filter(|f| f.path.ends_with(".md"))
        .map(|f| (f.path.as_str(), String::from_utf8_lossy(&f.bytes).into_owned()))
        .collect();
    let present: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let anchors: BTreeMap<&str, BTreeSet<String>> = texts.iter().map(|(p, t)| (*p, heading_slugs(t))).collect();
    let mut problems = Vec::new();
    for (path, text) in &texts {
        check_links(path, text, &present, &anchors, &mut problems);
        check_tables(path, text, &mut problems);
    }
    problems
}

/// The GitHub-style anchors of a page's headings, with `-1`, `-2` for repeats.
fn heading_slugs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for ev in Parser::new_ext(text, options()) {
        match ev {
            Event::Start(Tag::Heading { .. }) => current = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = current.take() {
                    let base = slug(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
                    *n += 1;
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = current.as_mut() {
                    h.push_str(&t);
                }
            }
            _ => {}
        }
    }
    out
}

/// `dir/../x` → `x`; None when the path climbs out of the folder.
fn normalise(base_dir: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base_dir.split('/').filter(|p| !p.is_empty()).collect();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

fn check_links(
    path: &str,
    text: &str,
    present: &BTreeSet<&str>,
    anchors: &BTreeMap<&str, BTreeSet<String>>,
    problems: &mut Vec<String>,
) {
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    for ev in Parser::new_ext(text, options()) {
        let (Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. })) = ev else {
            continue;
        };
        let dest = dest_url.as_ref();
        let lower = dest.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:") {
            continue;
        }
        if dest.is_empty() {
            problems.push(format!("{path}: a link has no destination"));
            continue;
        }
        let (target, frag) = match dest.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (dest, None),
        };
        let resolved = if target.is_empty() { Some(path.to_string()) } else { normalise(dir, target) };
        let Some(resolved) = resolved else {
            problems.push(format!("{path}: link `{dest}` leaves the report folder"));
            continue;
        };
        if !present.contains(resolved.as_str()) {
            problems.push(format!("{path}: link `{dest}` points to {resolved}, which is not produced"));
            continue;
        }
        if let (Some(frag), Some(slugs)) = (frag, anchors.get(resolved.as_str()))
            && !slugs.contains(frag)
        {
            problems.push(format!("{path}: link `{dest}` names no heading of {resolved}"));
        }
    }
}

/// Cells in one source row of a table: unescaped `|` separators, outer pipes excluded.
fn source_cells(line: &str) -> usize {
    let body = line.trim();
    let body = body.strip_prefix('|').unwrap_or(body);
    let mut seps = 0;
    let mut escaped = false;
    let mut last_was_pipe = false;
    for c in body.chars() {
        if escaped {
            escaped = false;
            last_was_pipe = false;
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                last_was_pipe = false;
            }
            '|' => {
                seps += 1;
                last_was_pipe = true;
            }
            c if c.is_whitespace() => {}
            _ => last_was_pipe = false,
        }
    }
    if last_was_pipe { seps } else { seps + 1 }
}

/// What one parsed table looked like.
struct ParsedTable {
    range: Range<usize>,
    columns: usize,
    rows: usize,
    row_cells: Vec<usize>,
}

fn check_tables(path: &str, text: &str, problems: &mut Vec<String>) {
    let mut tables: Vec<ParsedTable> = Vec::new();
    let mut code: Vec<Range<usize>> = Vec::new();
    let mut cells = 0usize;
    for (ev, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match ev {
            Event::Start(Tag::Table(align)) => {
                tables.push(ParsedTable { range, columns: align.len(), rows: 0, row_cells: Vec::new() })
            }
            Event::Start(Tag::CodeBlock(_)) => code.push(range),
            Event::Start(Tag::TableHead | Tag::TableRow) => cells = 0,
            Event::End(TagEnd::TableCell) => cells += 1,
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                if let Some(t) = tables.last_mut() {
                    t.rows += 1;
                    t.row_cells.push(cells);
                }
            }
            _ => {}
        }
    }
    for t in &tables {
        let src = &text[t.range.clone()];
        let lines: Vec<&str> = src.lines().filter(|l| !l.trim().is_empty()).collect();
        let line_no = text[..t.range.start].lines().count() + 1;
        let header = lines.first().map(|l| l.trim()).unwrap_or_default();
        if lines.len() != t.rows + 1 {
            problems.push(format!(
                "{path}:{line_no}: table `{header}` has {} source lines but parses as {} rows and a delimiter",
                lines.len(),
                t.rows
            ));
        }
        if let Some(bad) = t.row_cells.iter().position(|c| *c != t.columns) {
            problems.push(format!(
                "{path}:{line_no}: table `{header}` row {} parses with {} cells, not {}",
                bad + 1,
                t.row_cells[bad],
                t.columns
            ));
        }
        for (i, line) in lines.iter().enumerate() {
            let n = source_cells(line);
            if n != t.columns {
                problems.push(format!(
                    "{path}:{}: table row has {n} cells where the header has {}: `{}`",
                    line_no + i,
                    t.columns,
                    line.trim()
                ));
            }
        }
    }
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let inside = |r: &Range<usize>| r.start <= start && start < r.end;
        if !tables.iter().any(|t| inside(&t.range)) && !code.iter().any(inside) {
            problems.push(format!(
                "{path}:{}: a line starts with `|` but is not part of a table: `{}`",
                i + 1,
                line.trim()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(path: &str, text: &str) -> ReportFile {
        ReportFile { path: path.into(), bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn counts_cells_with_escaped_pipes() {
        assert_eq!(source_cells("| a | b |"), 2);
        assert_eq!(source_cells("| a \\| b | c |"), 2);
        assert_eq!(source_cells("|---|---:|"), 2);
        assert_eq!(source_cells("a | b"), 2);
    }

    #[test]
    fn broken_links_are_reported() {
        let files = vec![
            md(
                "README.md",
                "# T\n\n## Part one\n\n[ok](a/b.md) [frag](#part-one) [bad](missing.md) [badfrag](#nope) [up](../x.md) [web](https://example.org)\n",
            ),
            md("a/b.md", "# B\n\n![img](../charts/x.svg) [back](../README.md#part-one)\n"),
            md("charts/x.svg", "<svg/>"),
        ];
        let p = check_reports(&files);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("missing.md") && p[1].contains("#nope") && p[2].contains("leaves"), "{p:#?}");
    }

    #[test]
    fn ragged_and_broken_tables_are_reported() {
        let text = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n| x |\n\ntext\n\n| lone | pipe |\n\n```\n| in code |\n```\n";
        let p = check_reports(&[md("x.md", text)]);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("3 cells") && p[1].contains("1 cells") && p[2].contains("not part of a table"), "{p:#?}");
    }

    #[test]
    fn a_newline_in_a_cell_is_caught() {
        let text = "| a | b |\n|---|---|\n| 1 | two\nlines |\n";
        let p = check_reports(&[md("x.md", text)]);
        assert!(!p.is_empty(), "{p:#?}");
    }
}
