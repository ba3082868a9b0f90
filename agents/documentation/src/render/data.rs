//! The data files: `data/results.json` (the whole results), `data/results.csv` (one row per
//! run) and `data/telemetry.csv` (every model's sampled series), with text from outside made
//! safe for a terminal and defused for a spreadsheet.

use super::series::Series;
use crate::markdown::yaml_str;
use protocol::messages::BenchmarkResults;
use protocol::results::{ModelResult, RunResult};
use protocol::text::terminal_safe;

pub(super) fn results_json(results: &BenchmarkResults) -> String {
    match serde_json::to_string_pretty(results) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => format!("{{\"error\": {}}}\n", yaml_str(&format!("the results could not be serialised: {e}"))),
    }
}

/// A CSV field, quoted when it must be (RFC 4180).
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A text field from outside: control characters shown as symbols ([`terminal_safe`]),
/// spreadsheet formula starters defused with a leading `'`.
pub(super) fn csv_text(s: &str) -> String {
    let safe = terminal_safe(s);
    let s = safe.as_str();
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { csv_field(&format!("'{s}")) } else { csv_field(s) }
}

pub(super) fn csv_opt(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map(|x| x.to_string()).unwrap_or_default()
}

/// Column names of `data/results.csv`.
pub const CSV_COLUMNS: &[&str] = &[
    "model",
    "prompt",
    "repetition",
    "nonce",
    "ttft_ms",
    "e2e_ms",
    "tpot_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "output_tokens",
    "prompt_tokens",
    "client_decode_tps",
    "engine_decode_tps",
    "engine_prefill_tps",
    "engine_prompt_ms",
    "finish_reason",
    "words",
    "headings",
    "code_blocks",
    "list_items",
    "tables",
    "topics_covered",
    "topics_missing",
    "answer_key",
    "answer_sha256",
    "excerpt",
];

/// Every model's telemetry series in one CSV: `model`, then the union of the series' columns
/// in the order they first appear. Cells that are not numbers are quoted and defused.
pub(super) fn telemetry_csv(series: &[(String, Series)]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for (_, s) in series {
        for c in &s.columns {
            if !columns.contains(c) {
                columns.push(c);
            }
        }
    }
    let mut out = String::from("model");
    for c in &columns {
        out.push(',');
        out.push_str(&csv_text(c));
    }
    out.push_str("\r\n");
    let mut row: Vec<&str> = Vec::new();
    for (model, s) in series {
        let index: Vec<Option<usize>> = columns.iter().map(|c| s.columns.iter().position(|x| x == c)).collect();
        for line in &s.rows {
            row.clear();
            row.extend(Series::cells(line));
            out.push_str(&csv_text(model));
            for i in &index {
                out.push(',');
                let v = i.and_then(|i| row.get(i)).copied().unwrap_or("");
                if v.is_empty() || v.parse::<f64>().is_ok_and(f64::is_finite) {
                    out.push_str(v);
                } else {
                    out.push_str(&csv_text(v));
                }
            }
            out.push_str("\r\n");
        }
    }
    out
}

pub(super) fn results_csv(results: &BenchmarkResults) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    let mut models: Vec<&ModelResult> = results.models.iter().collect();
    models.sort_by_key(|m| m.index);
    for m in models {
        let mut runs: Vec<&RunResult> = m.runs.iter().collect();
        runs.sort_by(|a, b| (&a.prompt_id, a.repetition).cmp(&(&b.prompt_id, b.repetition)));
        for r in runs {
            let a = &r.analysis;
            let row = [
                csv_text(&m.model),
                csv_text(&r.prompt_id),
                r.repetition.to_string(),
                csv_text(&r.nonce),
                csv_opt(Some(r.ttft_ms)),
                csv_opt(Some(r.e2e_ms)),
                csv_opt(r.tpot_ms),
                csv_opt(r.itl_ms.map(|p| p.p50)),
                csv_opt(r.itl_ms.map(|p| p.p90)),
                csv_opt(r.itl_ms.map(|p| p.p99)),
                r.output_tokens.to_string(),
                r.prompt_tokens.map(|t| t.to_string()).unwrap_or_default(),
                csv_opt(r.client_decode_tps),
                csv_opt(r.engine_decode_tps),
                csv_opt(r.engine_prefill_tps),
                csv_opt(r.engine_prompt_ms),
                csv_text(r.finish_reason.as_deref().unwrap_or_default()),
                a.words.to_string(),
                a.headings.to_string(),
                a.code_blocks.to_string(),
                a.list_items.to_string(),
                a.tables.to_string(),
                csv_text(&a.topics_covered.join("; ")),
                csv_text(&a.topics_missing.join("; ")),
                csv_text(r.answer.as_ref().map(|b| b.key.as_str()).unwrap_or_default()),
                csv_text(r.answer.as_ref().map(|b| b.sha256.as_str()).unwrap_or_default()),
                csv_text(&r.excerpt),
            ];
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{csv_field, csv_text};

    #[test]
    fn text_from_outside_is_cleaned_and_defused() {
        assert_eq!(csv_text("=1+1\u{1b}[2J"), "'=1+1␛[2J");
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_text("a\rb"), "a␍b");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
