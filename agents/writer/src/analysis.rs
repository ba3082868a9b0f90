//! Reads an answer's structure with a markdown parser: words, headings, code, lists, tables,
//! and which of the prompt's required topics it covers.

use protocol::results::AnswerAnalysis;
use pulldown_cmark::{Event, Options, Parser, Tag};

/// Analyses one answer (untrusted text; nothing here renders it).
pub fn analyse(answer: &str, required_topics: &[String]) -> AnswerAnalysis {
    let mut a = AnswerAnalysis::default();
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut words: u64 = 0;
    for ev in Parser::new_ext(answer, opts) {
        match ev {
            Event::Start(Tag::Heading { .. }) => a.headings += 1,
            Event::Start(Tag::CodeBlock(_)) => a.code_blocks += 1,
            Event::Start(Tag::Item) => a.list_items += 1,
            Event::Start(Tag::Table(_)) => a.tables += 1,
            Event::Text(t) | Event::Code(t) => words += t.split_whitespace().count() as u64,
            _ => {}
        }
    }
    a.words = words.min(u64::from(u32::MAX)) as u32;
    let lower = answer.to_lowercase();
    for topic in required_topics {
        if covers(&lower, topic) {
            a.topics_covered.push(topic.clone());
        } else {
            a.topics_missing.push(topic.clone());
        }
    }
    a
}

/// A topic counts as covered when most of its significant words (4+ letters, or all of them for
/// short topics) appear in the answer: "Laboratory equipment integration" is covered by an
/// answer about "integrating lab equipment" only if the stems match, so stems are compared.
fn covers(answer_lower: &str, topic: &str) -> bool {
    let words: Vec<String> = topic
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(|w| stem(&w.to_lowercase()))
        .collect();
    if words.is_empty() {
        return answer_lower.contains(&topic.to_lowercase());
    }
    let hits = words.iter().filter(|w| answer_lower.contains(w.as_str())).count();
    hits * 3 >= words.len() * 2
}

fn stem(w: &str) -> String {
    let chars: Vec<char> = w.chars().collect();
    let keep = if chars.len() > 6 { chars.len() - 3 } else { chars.len() };
    chars[..keep].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_structure() {
        let md = "# Plan\n\nSome words here.\n\n- one\n- two\n\n```rust\nfn main() {}\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
        let a = analyse(md, &[]);
        assert_eq!((a.headings, a.list_items, a.code_blocks, a.tables), (1, 2, 1, 1));
        assert_eq!(a.words, 1 + 3 + 2 + 3 + 4);
    }

    #[test]
    fn rubric_coverage_uses_stems() {
        let topics = vec!["Monitoring and alerting".to_string(), "Backup strategy".to_string()];
        let a = analyse("We monitor everything and send alerts by mail.", &topics);
        assert_eq!(a.topics_covered, vec!["Monitoring and alerting".to_string()]);
        assert_eq!(a.topics_missing, vec!["Backup strategy".to_string()]);
    }

    #[test]
    fn hostile_text_is_just_counted() {
        let a = analyse("<script>alert(1)</script>\n\n\u{0}\u{1b}[31m", &[]);
        assert!(a.words >= 1);
    }
}
