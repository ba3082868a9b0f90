//! Where everything goes in the report folder: the pages in reading order, the charts and data
//! files every page links to, and the line of links at the top of each page.

/// The markdown pages, in reading order: path and title.
pub const PAGES: &[(&str, &str)] = &[
    ("README.md", "Summary"),
    ("benchmark-report.md", "Benchmark report"),
    ("deployment-guide.md", "Deployment guide"),
    ("troubleshooting.md", "Troubleshooting log"),
    ("business-case.md", "Business case"),
    ("quality.md", "Answer quality"),
    (CLAIMS, "Claims ledger"),
];

/// The claims ledger page.
pub(super) const CLAIMS: &str = "claims.md";
/// Decode chart path.
pub(super) const DECODE_CHART: &str = "charts/decode-tps.svg";
/// TTFT chart path.
pub(super) const TTFT_CHART: &str = "charts/ttft.svg";
/// Every model's telemetry series in one file.
pub(super) const TELEMETRY_CSV: &str = "data/telemetry.csv";

/// The line of links to every page at the top of each, with the current one in bold.
pub(super) fn nav(current: &str) -> String {
    let links: Vec<String> = PAGES
        .iter()
        .map(|(path, title)| if *path == current { format!("**{title}**") } else { format!("[{title}]({path})") })
        .collect();
    format!("{}\n\n", links.join(" · "))
}
