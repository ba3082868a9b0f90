//! The plan's `[cost]` section: what a million tokens cost on this box, and the dated, sourced
//! cloud prices it is compared with.

use super::PlanError;
use serde::{Deserialize, Serialize};

/// A dated cloud API price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPrice {
    /// Provider and model, e.g. `GPT-4`.
    pub name: String,
    /// USD per million tokens, low end.
    pub usd_per_mtok_min: f64,
    /// USD per million tokens, high end.
    pub usd_per_mtok_max: f64,
    /// USD per million input (prompt) tokens, when the offer prices them apart; with it the
    /// business case compares the plan's input:output mix.
    #[serde(default)]
    pub input_usd_per_mtok: Option<f64>,
    /// When the price was quoted (YYYY-MM-DD).
    pub as_of: String,
    /// Where the price was read: the pricing page's URL or the publication's name. Required.
    pub source: String,
}

/// Inputs for cost per million tokens.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostInputs {
    /// Electricity price, USD per kWh.
    pub electricity_usd_per_kwh: f64,
    /// Hardware price, USD.
    pub hardware_usd: f64,
    /// Hardware lifetime, years.
    pub lifetime_years: f64,
    /// Hours of use per day.
    pub hours_per_day: f64,
    /// Power draw to assume when none is measured, watts (wall power of the whole box).
    pub assumed_power_w: Option<f64>,
    /// Power of everything the counters do not measure (memory, disks, fans, board, power supply
    /// losses), watts: assumed, added to the measured GPU (NVML) and CPU package (RAPL) power.
    pub rest_of_system_w: Option<f64>,
    /// Input (prompt) tokens per output token for the mixed cost, e.g. 3 for a 3:1 mix.
    pub input_output_ratio: Option<f64>,
    /// Cloud prices to compare against.
    pub cloud: Vec<CloudPrice>,
}

/// Checks one `[[cost.cloud]]` entry: a name, prices ≥ 0 (low ≤ high), a real date and a source.
fn validate_cloud(i: usize, p: &CloudPrice) -> Result<(), PlanError> {
    let bad =
        |field: &str, problem: String| Err(PlanError::Invalid { field: format!("cost.cloud[{i}].{field}"), problem });
    if p.name.trim().is_empty() {
        return bad("name", "must not be empty: name the provider and model".into());
    }
    for (field, v) in [
        ("usd_per_mtok_min", Some(p.usd_per_mtok_min)),
        ("usd_per_mtok_max", Some(p.usd_per_mtok_max)),
        ("input_usd_per_mtok", p.input_usd_per_mtok),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return bad(field, format!("expected a price ≥ 0, got {v}"));
        }
    }
    if p.usd_per_mtok_min > p.usd_per_mtok_max {
        return bad(
            "usd_per_mtok_min",
            format!("{} is above usd_per_mtok_max {}", p.usd_per_mtok_min, p.usd_per_mtok_max),
        );
    }
    if !is_date(&p.as_of) {
        return bad("as_of", format!("expected the date the price was read as YYYY-MM-DD, got `{}`", p.as_of));
    }
    if p.source.trim().is_empty() {
        return bad("source", "must not be empty: give the pricing page's URL or the publication's name".into());
    }
    Ok(())
}

/// Whether `s` is a calendar date `YYYY-MM-DD` (month 1–12, day valid for the month).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?.parse::<u32>().ok();
    let (Some(y), Some(m), Some(d)) = (n(0..4), n(5..7), n(8..10)) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 2000 && (1..=days).contains(&d)
}

impl CostInputs {
    /// Checks every figure of the section; the error names the field.
    pub(super) fn validate(&self) -> Result<(), PlanError> {
        let bad = |field: String, problem: String| Err(PlanError::Invalid { field, problem });
        let c = self;
        for (field, v) in [
            ("cost.electricity_usd_per_kwh", c.electricity_usd_per_kwh),
            ("cost.hardware_usd", c.hardware_usd),
            ("cost.lifetime_years", c.lifetime_years),
            ("cost.hours_per_day", c.hours_per_day),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field.into(), format!("expected a number ≥ 0, got {v}"));
            }
        }
        if c.hours_per_day > 24.0 {
            return bad("cost.hours_per_day".into(), format!("expected at most 24, got {}", c.hours_per_day));
        }
        for (field, v) in [
            ("cost.assumed_power_w", c.assumed_power_w),
            ("cost.rest_of_system_w", c.rest_of_system_w),
            ("cost.input_output_ratio", c.input_output_ratio),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return bad(field.into(), format!("expected a number ≥ 0, got {v}"));
            }
        }
        for (i, p) in c.cloud.iter().enumerate() {
            validate_cloud(i, p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Plan, PlanError};

    const HEAD: &str = "name = \"p\"\n[[models]]\nname = \"m\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"/m.gguf\"\n[[prompts]]\nid = \"a\"\ntext = \"hi\"\n[cost]\nelectricity_usd_per_kwh = 0.3\nhardware_usd = 1000\nlifetime_years = 3\nhours_per_day = 8\n";

    fn plan(cost: &str) -> Result<Plan, PlanError> {
        Plan::from_toml(&format!("{HEAD}{cost}"))
    }

    fn invalid(cost: &str) -> (String, String) {
        match plan(cost) {
            Err(PlanError::Invalid { field, problem }) => (field, problem),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_cloud_price_needs_a_source_and_a_real_date() {
        let ok = "cloud = [{ name = \"X\", usd_per_mtok_min = 0.6, usd_per_mtok_max = 0.6, input_usd_per_mtok = 0.15, as_of = \"2025-06-01\", source = \"https://example.com/pricing\" }]\n";
        let p = plan(ok).unwrap();
        let c = &p.cost.unwrap().cloud[0];
        assert_eq!((c.input_usd_per_mtok, c.source.as_str()), (Some(0.15), "https://example.com/pricing"));
        let missing =
            "cloud = [{ name = \"X\", usd_per_mtok_min = 1, usd_per_mtok_max = 2, as_of = \"2025-06-01\" }]\n";
        let err = plan(missing).unwrap_err().to_string();
        assert!(err.contains("missing field `source`"), "{err}");
        let empty = ok.replace("https://example.com/pricing", " ");
        assert_eq!(invalid(&empty).0, "cost.cloud[0].source");
        for date in ["YYYY-MM-DD", "2025-02-30", "2025-13-01", "25-06-01", "2025-6-1"] {
            let (field, problem) = invalid(&ok.replace("2025-06-01", date));
            assert_eq!(field, "cost.cloud[0].as_of", "{date}");
            assert!(problem.contains(date), "{problem}");
        }
        assert!(plan(&ok.replace("2025-06-01", "2024-02-29")).is_ok());
        assert_eq!(
            invalid(&ok.replace("usd_per_mtok_min = 0.6", "usd_per_mtok_min = 7")).0,
            "cost.cloud[0].usd_per_mtok_min"
        );
        assert_eq!(invalid(&ok.replace("0.15", "-1")).0, "cost.cloud[0].input_usd_per_mtok");
    }

    #[test]
    fn rest_of_system_and_mix_are_checked() {
        let p = plan("rest_of_system_w = 45\ninput_output_ratio = 3\n").unwrap().cost.unwrap();
        assert_eq!((p.rest_of_system_w, p.input_output_ratio), (Some(45.0), Some(3.0)));
        assert_eq!(invalid("rest_of_system_w = -5\n").0, "cost.rest_of_system_w");
        assert_eq!(invalid("input_output_ratio = nan\n").0, "cost.input_output_ratio");
    }
}
