//! How the reports write a figure or a word: numbers with the decimals their size deserves,
//! percentages, dollars, GiB, durations, spreads, projected bounds, and the words for verdicts,
//! check states, remedies and failure classes. Pure functions of their arguments.

use crate::markdown::cell;
use protocol::plan::Bounds;
use protocol::results::{CheckStatus, FailureClass, Fit, RemedyAction, Stat};

/// Placeholder for a figure that was not measured or not projected.
pub(super) const DASH: &str = "—";
/// Bytes in a GiB; the plan's "GB" are read as GiB, as Docker's memory limits are.
pub(super) const GIB: f64 = 1_073_741_824.0;

/// A figure with as many decimals as its size deserves.
pub(super) fn num(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    format!("{v:.*}", decimals(v))
}

/// Decimals a figure of this size deserves: three significant digits, at most two decimals.
pub(super) fn decimals(v: f64) -> usize {
    let a = v.abs();
    if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    }
}

/// A setting or plan input: whole numbers without decimals, others like [`num`].
pub(super) fn plain(v: f64) -> String {
    if v.is_finite() && (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { num(v) }
}

/// A count averaged over repetitions: whole numbers as they are, else one decimal.
pub(super) fn count(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// A share from 0 to 1 as a whole percentage.
pub(super) fn percent(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// Dollars: cents below $100, whole dollars with thousands separators above.
pub(super) fn usd(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    if v.abs() >= 100.0 {
        let whole = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{}${grouped}", if v < 0.0 { "-" } else { "" })
    } else if v.abs() >= 0.1 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// An optional figure, or the dash.
pub(super) fn opt_num(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| DASH.to_string())
}

/// Bytes as GiB.
pub(super) fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

/// Optional bytes as GiB, or the dash.
pub(super) fn opt_gib(bytes: Option<u64>) -> String {
    bytes.map(|b| num(gib(b))).unwrap_or_else(|| DASH.to_string())
}

/// `mean ± sd`, scaled; `⚠` marks a spread above the plan's flag.
pub(super) fn stat_text(s: Option<&Stat>, scale: f64) -> String {
    match s {
        None => DASH.to_string(),
        Some(s) if s.n <= 1 => num(s.mean * scale),
        Some(s) => {
            let flag = if s.unstable { " ⚠" } else { "" };
            let d = decimals(s.mean * scale);
            format!("{:.d$} ± {:.d$}{flag}", s.mean * scale, s.stddev * scale)
        }
    }
}

/// Projected bounds as the plan wrote them, or the dash.
pub(super) fn bounds(b: Option<&Bounds>) -> String {
    b.map(|b| b.to_string()).unwrap_or_else(|| DASH.to_string())
}

/// Where a measured value falls against projected bounds.
pub(super) fn against(b: Option<&Bounds>, v: Option<f64>) -> &'static str {
    match (b, v) {
        (None, _) => "no projection",
        (Some(_), None) => "not measured",
        (Some(b), Some(v)) if b.contains(v) => "within",
        (Some(b), Some(v)) if b.min.is_some_and(|m| v < m) => "below",
        (Some(_), Some(_)) => "above",
    }
}

/// A verdict in words, as the reports write it.
pub(super) fn fit_word(f: Fit) -> &'static str {
    match f {
        Fit::Go => "go",
        Fit::GoPartialOffload => "go, partial offload",
        Fit::NoGo => "no-go",
        Fit::Unknown => "unknown",
    }
}

/// A host check's state, as the reports write it.
pub(super) fn check_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "PASS",
        CheckStatus::Warn => "WARN",
        CheckStatus::Fail => "**FAIL**",
        CheckStatus::Unavailable => "unavailable",
    }
}

/// A remedy in words.
pub(super) fn action_text(a: &RemedyAction) -> String {
    match a {
        RemedyAction::Retry { set } if set.is_empty() => "retry unchanged".to_string(),
        RemedyAction::Retry { set } => {
            format!("retry with {}", set.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", "))
        }
        RemedyAction::CoolDown { seconds } => format!("cool down for {seconds} s, then retry"),
        RemedyAction::Skip => "skip the model".to_string(),
        RemedyAction::Abort => "abort the cycle".to_string(),
        RemedyAction::Continue => "continue despite the failed checks".to_string(),
        RemedyAction::Reverify => "re-verify the host".to_string(),
    }
}

/// A failure class in words.
pub(super) fn class_words(c: FailureClass) -> &'static str {
    match c {
        FailureClass::EngineUnhealthy => "engine never became healthy",
        FailureClass::EngineExited => "engine exited",
        FailureClass::OomKilled => "killed by the OOM killer",
        FailureClass::GpuOutOfMemory => "GPU out of memory",
        FailureClass::HostOutOfMemory => "system memory too small",
        FailureClass::ModelNotFound => "model not found",
        FailureClass::RequestFailed => "request failed",
        FailureClass::ContextOverflow => "prompt exceeded the context",
        FailureClass::Thermal => "GPU too hot",
        FailureClass::HostCheck => "host check failed",
        FailureClass::Other => "other failure",
    }
}

/// Seconds as `1 h 2 min`, `3 min 4 s` or `5.6 s`.
pub(super) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return DASH.into();
    }
    let whole = secs.round() as u64;
    if whole >= 3600 {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} s", num(secs))
    }
}

/// The first 12 characters of a hash.
pub(super) fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// Memory in whole MiB, as `docker run` and compose were given it.
pub(super) fn mib(bytes: u64) -> String {
    format!("{}m", bytes >> 20)
}

/// A change against a base, as a signed whole percentage.
pub(super) fn pct_change(new: f64, base: f64) -> String {
    if base.abs() < f64::EPSILON {
        return DASH.into();
    }
    let p = (new - base) / base * 100.0;
    format!("{}{:.0} %", if p >= 0.0 { "+" } else { "−" }, p.abs())
}
