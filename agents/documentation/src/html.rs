//! One self-contained HTML file from the markdown pages: inline CSS, inline SVG charts, a nav,
//! no scripts and nothing fetched from the network.
//!
//! Raw HTML in the markdown is never passed through: pulldown-cmark's HTML events are turned
//! into text, so even text that slipped past escaping cannot become a tag.

use crate::markdown::slug;
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeMap, HashMap};

/// The parser options every page is read with (also used by the checks).
pub fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES
}

/// The id of a page's section: `page-` and the slug of its path without `.md`.
pub fn page_anchor(path: &str) -> String {
    format!("page-{}", slug(&path.trim_end_matches(".md").replace(['/', '.'], "-")))
}

const STYLE: &str = "
:root { color-scheme: light; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d2733; background: #f6f7f9; }
nav { position: sticky; top: 0; background: #1d2733; padding: 0.6rem 1.2rem; z-index: 1; }
nav a { color: #e8edf2; margin-right: 1.2rem; text-decoration: none; font-weight: 600; }
nav a:hover { text-decoration: underline; }
main { max-width: 1180px; margin: 0 auto; padding: 1rem 1.2rem 4rem; }
section { background: #fff; border: 1px solid #e3e7ec; border-radius: 6px; padding: 0.5rem 1.6rem 1.2rem; margin: 1.2rem 0; overflow-x: auto; }
h1 { font-size: 1.6rem; border-bottom: 1px solid #e3e7ec; padding-bottom: 0.3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; }
h3 { font-size: 1.08rem; margin-top: 1.5rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d5dbe1; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #eef1f4; text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
code { font: 0.88em ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; background: #eef1f4; padding: 0.05em 0.3em; border-radius: 3px; }
pre { background: #1d2733; color: #e8edf2; padding: 0.8rem 1rem; border-radius: 5px; overflow-x: auto; }
pre code { background: none; padding: 0; color: inherit; white-space: pre; }
svg { max-width: 100%; height: auto; display: block; margin: 0.8rem 0; border: 1px solid #e3e7ec; }
";

/// One markdown page of the report.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// Path relative to the report folder (what other pages link to).
    pub path: &'a str,
    /// Short title for the nav.
    pub title: &'a str,
    /// The page's markdown.
    pub markdown: &'a str,
}

/// Renders the pages into one HTML document; images whose path is a key of `svgs` are
/// replaced by the SVG itself, and links between pages become in-page anchors.
pub fn render_html(title: &str, pages: &[Page], svgs: &BTreeMap<String, String>) -> String {
    let paths: Vec<&str> = pages.iter().map(|p| p.path).collect();
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    out.push_str(&format!("<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<nav>", escape(title)));
    for p in pages {
        out.push_str(&format!("<a href=\"#{}\">{}</a>", page_anchor(p.path), escape(p.title)));
    }
    out.push_str("</nav>\n<main>\n");
    for p in pages {
        out.push_str(&format!("<section id=\"{}\">\n", page_anchor(p.path)));
        out.push_str(&markdown_to_html(p.markdown, p.path, &paths, svgs));
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// HTML-escapes text for element content and attribute values: `&`, `<`, `>`, `"` and `'`
/// (pulldown-cmark's own escaper, the one its HTML writer uses).
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    // Writing into a String cannot fail: its `write_str` is `push_str`.
    let _ = pulldown_cmark_escape::escape_html(&mut s, text);
    s
}

/// Whether a link destination may stay as it is: relative, in-page, http(s) or mailto.
fn safe_destination(dest: &str) -> bool {
    let scheme_end = dest.find(':');
    let path_start = dest.find(['/', '?', '#']).unwrap_or(dest.len());
    match scheme_end {
        Some(i) if i < path_start => {
            let scheme = dest[..i].to_ascii_lowercase();
            matches!(scheme.as_str(), "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Where a link from page `from` to `dest` points inside the single HTML file.
fn rewrite_destination(dest: &str, from: &str, pages: &[&str]) -> String {
    if !safe_destination(dest) {
        return "#".to_string();
    }
    if let Some(frag) = dest.strip_prefix('#') {
        return format!("#{}-{}", page_anchor(from), frag);
    }
    let (path, frag) = match dest.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (dest, None),
    };
    if pages.contains(&path) {
        return match frag {
            Some(f) => format!("#{}-{f}", page_anchor(path)),
            None => format!("#{}", page_anchor(path)),
        };
    }
    dest.to_string()
}

/// One page's markdown as HTML, with raw HTML neutralised, headings given ids, page links made
/// anchors and known SVG images inlined.
pub fn markdown_to_html(md: &str, path: &str, pages: &[&str], svgs: &BTreeMap<String, String>) -> String {
    let anchor = page_anchor(path);
    let mut events: Vec<Event> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<(Event, Vec<Event>, String)> = None;
    let mut skip_image = 0usize;
    for ev in Parser::new_ext(md, options()) {
        if skip_image > 0 {
            match ev {
                Event::Start(Tag::Image { .. }) => skip_image += 1,
                Event::End(TagEnd::Image) => skip_image -= 1,
                _ => {}
            }
            continue;
        }
        let ev = match ev {
            // Raw HTML is shown as the text it is, never passed through.
            Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
            Event::Start(Tag::Image { dest_url, .. }) if svgs.contains_key(dest_url.as_ref()) => {
                skip_image = 1;
                let svg = svgs.get(dest_url.as_ref()).cloned().unwrap_or_default();
                Event::Html(CowStr::from(svg))
            }
            Event::Start(Tag::Link { link_type, dest_url, title, id }) => Event::Start(Tag::Link {
                link_type,
                dest_url: CowStr::from(rewrite_destination(&dest_url, path, pages)),
                title,
                id,
            }),
            Event::Start(Tag::Image { link_type, dest_url, title, id }) => Event::Start(Tag::Image {
                link_type,
                dest_url: CowStr::from(if safe_destination(&dest_url) { dest_url.to_string() } else { String::new() }),
                title,
                id,
            }),
            other => other,
        };
        match (&mut heading, ev) {
            (None, start @ Event::Start(Tag::Heading { .. })) => heading = Some((start, Vec::new(), String::new())),
            (Some(_), Event::End(TagEnd::Heading(level))) => {
                let Some((start, inner, text)) = heading.take() else {
                    continue;
                };
                let base = format!("{anchor}-{}", slug(&text));
                let n = seen.entry(base.clone()).or_insert(0);
                let id = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
                *n += 1;
                let start = match start {
                    Event::Start(Tag::Heading { level, classes, attrs, .. }) => {
                        Event::Start(Tag::Heading { level, id: Some(CowStr::from(id)), classes, attrs })
                    }
                    other => other,
                };
                events.push(start);
                events.extend(inner);
                events.push(Event::End(TagEnd::Heading(level)));
            }
            (Some((_, inner, text)), ev) => {
                if let Event::Text(t) | Event::Code(t) = &ev {
                    text.push_str(t);
                }
                inner.push(ev);
            }
            (None, ev) => events.push(ev),
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_characters_and_keeps_the_rest() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ünïcode ✓ \u{1b}"), "plain ünïcode ✓ \u{1b}");
        assert_eq!(escape(""), "");
    }

    fn one(md: &str) -> String {
        markdown_to_html(md, "README.md", &["README.md", "quality.md"], &BTreeMap::new())
    }

    #[test]
    fn raw_html_in_markdown_is_shown_as_text() {
        let html =
            one("<script>alert(1)</script>\n\nInline <img src=x onerror=alert(1)> here.\n\n<div>\n*x*\n</div>\n");
        assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<div"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    }

    #[test]
    fn unsafe_link_schemes_are_dropped() {
        let html =
            one("[a](javascript:alert(1)) [b](data:text/html,x) [c](https://example.org/) [d](data/results.csv)");
        assert!(!html.contains("javascript:") && !html.contains("data:text"), "{html}");
        assert!(html.contains("href=\"https://example.org/\"") && html.contains("href=\"data/results.csv\""), "{html}");
    }

    #[test]
    fn page_links_become_anchors_and_headings_get_ids() {
        let html = one(
            "# Title\n\n## Metric definitions\n\n[q](quality.md) [m](#metric-definitions) [x](quality.md#baseline)\n",
        );
        assert!(html.contains("<h2 id=\"page-readme-metric-definitions\">"), "{html}");
        assert!(html.contains("href=\"#page-quality\""), "{html}");
        assert!(html.contains("href=\"#page-readme-metric-definitions\""), "{html}");
        assert!(html.contains("href=\"#page-quality-baseline\""), "{html}");
    }

    #[test]
    fn known_svgs_are_inlined() {
        let mut svgs = BTreeMap::new();
        svgs.insert("charts/a.svg".to_string(), "<svg id=\"a\"></svg>".to_string());
        let html = markdown_to_html("![chart *a*](charts/a.svg)\n", "README.md", &[], &svgs);
        assert!(html.contains("<svg id=\"a\"></svg>") && !html.contains("<img"), "{html}");
    }

    #[test]
    fn the_document_has_a_nav_and_no_scripts() {
        let pages = [Page { path: "README.md", title: "Summary", markdown: "# Summary — x\n\nhi\n" }];
        let doc = render_html("T <x>", &pages, &BTreeMap::new());
        assert!(
            doc.contains("<a href=\"#page-readme\">Summary</a>") && doc.contains("<title>T &lt;x&gt;</title>"),
            "{doc}"
        );
        assert!(!doc.contains("<script"));
    }
}
