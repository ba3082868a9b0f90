//! One rule per success criterion: how a measured figure is held to the plan's limit, shared by
//! the Reader's checks and the reports.

use super::Criteria;

/// How a measured figure is held to a plan limit. Each criterion has one rule
/// ([`Criteria::rule`]), used by the Reader's checks, the reports' criteria table and the claims
/// ledger alike, so a figure at the limit gets the same verdict everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The figure must reach the limit (`≥`).
    AtLeast,
    /// The figure must not pass the limit (`≤`).
    AtMost,
}

impl Rule {
    /// Whether `measured` meets `limit` under this rule.
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Rule::AtLeast => measured >= limit,
            Rule::AtMost => measured <= limit,
        }
    }

    /// `≥` or `≤`, for thresholds shown to the operator.
    pub fn symbol(self) -> &'static str {
        match self {
            Rule::AtLeast => "≥",
            Rule::AtMost => "≤",
        }
    }
}

/// A criterion of the plan's `[criteria]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriterionKind {
    /// `min_gpu_util_pct`.
    GpuUtilisation,
    /// `max_temp_c` (the peak while generating).
    SustainedTemperature,
    /// `max_idle_temp_c` (at host verification).
    IdleTemperature,
    /// `min_decode_tps`.
    DecodeSpeed,
}

impl Criteria {
    /// The rule a criterion is judged by: a minimum must be reached, a maximum not passed.
    pub fn rule(kind: CriterionKind) -> Rule {
        match kind {
            CriterionKind::GpuUtilisation | CriterionKind::DecodeSpeed => Rule::AtLeast,
            CriterionKind::SustainedTemperature | CriterionKind::IdleTemperature => Rule::AtMost,
        }
    }

    /// The plan's limit for a criterion, when it sets one.
    pub fn limit(&self, kind: CriterionKind) -> Option<f64> {
        match kind {
            CriterionKind::GpuUtilisation => self.min_gpu_util_pct,
            CriterionKind::SustainedTemperature => self.max_temp_c,
            CriterionKind::IdleTemperature => self.max_idle_temp_c,
            CriterionKind::DecodeSpeed => self.min_decode_tps,
        }
    }

    /// Whether `measured` meets the plan's limit; `None` when the plan sets none.
    pub fn judge(&self, kind: CriterionKind, measured: f64) -> Option<bool> {
        self.limit(kind).map(|l| Criteria::rule(kind).holds(measured, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_at_the_limit_gets_one_verdict_per_criterion() {
        let c = Criteria {
            min_gpu_util_pct: Some(80.0),
            max_temp_c: Some(70.0),
            max_idle_temp_c: Some(65.0),
            min_decode_tps: Some(2.0),
            ..Criteria::default()
        };
        assert_eq!(c.judge(CriterionKind::IdleTemperature, 65.0), Some(true), "at the maximum: within it");
        assert_eq!(c.judge(CriterionKind::IdleTemperature, 65.5), Some(false));
        assert_eq!(c.judge(CriterionKind::SustainedTemperature, 70.0), Some(true));
        assert_eq!(c.judge(CriterionKind::GpuUtilisation, 80.0), Some(true), "at the minimum: reached");
        assert_eq!(c.judge(CriterionKind::DecodeSpeed, 1.99), Some(false));
        assert_eq!(Criteria::default().judge(CriterionKind::DecodeSpeed, 1.0), None);
        assert_eq!(Criteria::rule(CriterionKind::IdleTemperature).symbol(), "≤");
    }
}
