//! Markdown building blocks that keep untrusted text inert.
//!
//! Model answers, log lines, error text and even names from the plan come from outside the
//! process. Everything here turns such text into markdown that renders as the same characters
//! and can never become a link, an emphasis, a table cell boundary, a new block or raw HTML.

/// Characters CommonMark would read as syntax somewhere inside a line.
const INLINE_SPECIAL: &[char] = &['\\', '`', '*', '_', '[', ']', '<', '>', '&', '|', '~'];

/// Escapes untrusted text for a table cell or running text: one line, every markdown and HTML
/// metacharacter backslash-escaped, control characters dropped.
pub fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.chars().enumerate() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c if INLINE_SPECIAL.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            // A leading block marker (`- x`, `# x`, `= x`) would start a list or a heading
            // when the text opens a list item; escaping it is harmless elsewhere.
            '-' | '+' | '=' | '#' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    // `1. text` or `1) text` at the start would open an ordered list inside a list item.
    if let Some(pos) = out.find(['.', ')'])
        && pos > 0
        && out[..pos].bytes().all(|b| b.is_ascii_digit())
        && out[pos + 1..].chars().next().is_none_or(|c| c == ' ')
    {
        out.insert(pos, '\\');
    }
    out
}

/// Escapes untrusted text for a table cell (the same as [`inline`]; named for the call sites).
pub fn cell(text: &str) -> String {
    inline(text)
}

/// Escaped text shortened to at most `max` characters, with an ellipsis when cut.
pub fn cell_short(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return inline(&flat);
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", inline(cut.trim_end()))
}

/// The longest run of `ch` in `text`.
fn longest_run(text: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == ch { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// A fenced code block holding `text` verbatim; the fence is longer than any backtick run in
/// the text, so the text cannot close it. `info` is reduced to letters, digits and `-`.
pub fn fence(text: &str, info: &str) -> String {
    let ticks = "`".repeat((longest_run(text, '`') + 1).max(3));
    let info: String = info.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let body: String = text.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect();
    let mut out = format!("{ticks}{info}\n{body}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&ticks);
    out.push('\n');
    out
}

/// An inline code span for trusted text (commands, keys); backticks in it are fenced around.
pub fn code(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_run(&flat, '`') + 1);
    if flat.starts_with('`') || flat.ends_with('`') {
        format!("{ticks} {flat} {ticks}")
    } else {
        format!("{ticks}{flat}{ticks}")
    }
}

/// Column alignment in a [`table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table of figures: the first `labels` columns (names) left-aligned, every other column
/// (numbers) right-aligned.
pub fn figures_table(labels: usize, headers: &[&str], rows: &[Vec<String>]) -> String {
    let align: Vec<Align> = (0..headers.len()).map(|i| if i < labels { Align::Left } else { Align::Right }).collect();
    table(headers, &align, rows)
}

/// A GFM table. Cells are markdown already (escape untrusted text with [`cell`]); a row with
/// too few cells is padded with "—", and line breaks inside a cell become spaces.
pub fn table(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let width = headers.len();
    let clean = |s: &str| {
        let flat = s.replace(['\n', '\r'], " ");
        if flat.trim().is_empty() { "—".to_string() } else { flat }
    };
    let mut out = String::new();
    out.push('|');
    for h in headers {
        out.push_str(&format!(" {} |", clean(h)));
    }
    out.push_str("\n|");
    for i in 0..width {
        out.push_str(match align.get(i) {
            Some(Align::Right) => "---:|",
            _ => "---|",
        });
    }
    out.push('\n');
    for row in rows {
        out.push('|');
        for i in 0..width {
            let c = row.get(i).map(String::as_str).unwrap_or("—");
            out.push_str(&format!(" {} |", clean(c)));
        }
        out.push('\n');
    }
    out
}

/// Quotes a word for a POSIX shell, leaving plain words as they are.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as `-`.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    const HOSTILE: &str = "a | b <script>alert(1)</script> ``x`` *em* _u_ [l](javascript:x) &amp; \\ ~~s~~ # h\n- item";

    fn text_of(md: &str) -> (String, Vec<String>) {
        let mut text = String::new();
        let mut tags = Vec::new();
        for ev in Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::Code(t) => text.push_str(&t),
                Event::Start(t) => tags.push(format!("{t:?}")),
                Event::Html(h) | Event::InlineHtml(h) => tags.push(format!("HTML {h}")),
                _ => {}
            }
        }
        (text, tags)
    }

    #[test]
    fn inline_text_renders_as_the_same_characters() {
        let md = format!("Answer: {}", inline(HOSTILE));
        let (text, tags) = text_of(&md);
        assert_eq!(text, format!("Answer: {}", HOSTILE.replace('\n', " ")));
        assert_eq!(tags, vec!["Paragraph".to_string()], "no emphasis, link, code or HTML: {tags:?}");
    }

    #[test]
    fn list_item_markers_at_the_start_stay_text() {
        for t in ["# heading", "- item", "+ item", "1. first", "2) second", "> quote", "=== x"] {
            let md = format!("- {}\n", inline(t));
            let (text, tags) = text_of(&md);
            assert_eq!(text, t, "{md}");
            assert_eq!(tags, vec!["List(None)".to_string(), "Item".to_string()], "{t}: {tags:?}");
        }
    }

    #[test]
    fn a_hostile_cell_stays_one_cell() {
        let md = table(&["k", "v"], &[], &[vec!["x".into(), cell(HOSTILE)]]);
        let mut cells = 0;
        let mut texts = Vec::new();
        let mut cur = String::new();
        for ev in Parser::new_ext(&md, Options::ENABLE_TABLES) {
            match ev {
                Event::Text(t) => cur.push_str(&t),
                Event::End(TagEnd::TableCell) => {
                    cells += 1;
                    texts.push(std::mem::take(&mut cur));
                }
                Event::Html(_) | Event::InlineHtml(_) => panic!("raw HTML from a cell"),
                Event::Start(Tag::Link { .. } | Tag::Emphasis | Tag::Strikethrough) => {
                    panic!("markup from a cell")
                }
                _ => {}
            }
        }
        assert_eq!(cells, 4);
        assert_eq!(texts[3], HOSTILE.replace('\n', " "));
    }

    #[test]
    fn fence_outgrows_backtick_runs() {
        let body = "before\n````\nnot the end\n```\nafter";
        let md = format!("{}tail\n", fence(body, "text"));
        let mut blocks = 0;
        let mut inside = String::new();
        let mut in_code = false;
        for ev in Parser::new(&md) {
            match ev {
                Event::Start(Tag::CodeBlock(_)) => {
                    blocks += 1;
                    in_code = true;
                }
                Event::End(TagEnd::CodeBlock) => in_code = false,
                Event::Text(t) if in_code => inside.push_str(&t),
                _ => {}
            }
        }
        assert_eq!(blocks, 1);
        assert_eq!(inside, format!("{body}\n"));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("ollama/ollama:0.12.6"), "ollama/ollama:0.12.6");
        assert_eq!(shell_word("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn slugs_match_github() {
        assert_eq!(slug("Metric definitions"), "metric-definitions");
        assert_eq!(slug("qwen25-coder-14b: projected against measured"), "qwen25-coder-14b-projected-against-measured");
        assert_eq!(slug("1. llama31-70b, attempt 1: killed"), "1-llama31-70b-attempt-1-killed");
    }

    #[test]
    fn short_cells_cut_on_characters() {
        assert_eq!(cell_short("ab  cd\nef", 20), "ab cd ef");
        assert_eq!(cell_short("ééééé", 3), "éé…");
    }
}
