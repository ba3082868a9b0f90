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

/// A CSV file from its records: RFC 4180 quoting where a field needs it (a comma, a quote or a
/// line break), CRLF line ends, written by the `csv` crate. Writing into memory cannot fail
/// but for a record of another length, which the file then says instead of being cut short.
pub(super) fn csv_file<R: IntoIterator<Item = S>, S: AsRef<[u8]>>(records: impl IntoIterator<Item = R>) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    for (i, r) in records.into_iter().enumerate() {
        if let Err(e) = w.write_record(r) {
            return format!("error\r\nthe CSV could not be written at record {}: {e}\r\n", i + 1);
        }
    }
    match w.into_inner() {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("error\r\nthe CSV could not be written: {e}\r\n"),
    }
}

/// A text field from outside, before quoting: control characters shown as symbols
/// ([`terminal_safe`]), spreadsheet formula starters defused with a leading `'`.
pub(super) fn csv_text(s: &str) -> String {
    let safe = terminal_safe(s);
    if safe.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{safe}") } else { safe }
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
    let mut records: Vec<Vec<String>> = Vec::new();
    records.push(std::iter::once("model".to_string()).chain(columns.iter().map(|c| csv_text(c))).collect());
    let mut row: Vec<&str> = Vec::new();
    for (model, s) in series {
        let index: Vec<Option<usize>> = columns.iter().map(|c| s.columns.iter().position(|x| x == c)).collect();
        for line in &s.rows {
            row.clear();
            row.extend(Series::cells(line));
            let mut record = vec![csv_text(model)];
            for i in &index {
                let v = i.and_then(|i| row.get(i)).copied().unwrap_or("");
                record.push(if v.is_empty() || v.parse::<f64>().is_ok_and(f64::is_finite) {
                    v.to_string()
                } else {
                    csv_text(v)
                });
            }
            records.push(record);
        }
    }
    csv_file(records)
}

pub(super) fn results_csv(results: &BenchmarkResults) -> String {
    let mut records: Vec<Vec<String>> = vec![CSV_COLUMNS.iter().map(|c| c.to_string()).collect()];
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
            records.push(row.into());
        }
    }
    csv_file(records)
}

#[cfg(test)]
mod tests {
    use super::{csv_file, csv_text};

    fn line(cells: &[&str]) -> String {
        csv_file([cells])
    }

    #[test]
    fn text_from_outside_is_cleaned_and_defused() {
        assert_eq!(csv_text("=1+1\u{1b}[2J"), "'=1+1␛[2J");
        assert_eq!(line(&[&csv_text("=HYPERLINK(\"x\")")]), "\"'=HYPERLINK(\"\"x\"\")\"\r\n");
        assert_eq!(csv_text("a\rb"), "a␍b");
        for starter in ["+1", "-1", "@SUM(A1)", "\tx"] {
            assert!(csv_text(starter).starts_with('\''), "{starter}");
        }
        assert_eq!(
            line(&["a,b", "plain", "", "say \"hi\"", "two\nlines"]),
            "\"a,b\",plain,,\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
    }

    #[test]
    fn a_record_of_another_length_is_said_not_cut() {
        let out = csv_file([vec!["a", "b"], vec!["c"]]);
        assert!(out.starts_with("error\r\n") && out.contains("record 2"), "{out}");
    }
}
