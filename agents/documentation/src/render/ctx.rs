//! Everything the pages share: the input, the plan, one view per model in plan order, the
//! escalations oldest first, the success criteria, and the telemetry series and charts.

use super::criteria::{self, Criterion};
use super::input::ReportInput;
use super::series::{Series, TimeChart, time_charts};
use super::view::{Effective, Figures, View};
use crate::markdown::inline;
use protocol::plan::Plan;
use protocol::results::{EscalationRecord, ModelResult, RunResult};

/// Everything the pages share.
pub(super) struct Ctx<'a> {
    pub(super) input: &'a ReportInput,
    pub(super) plan: &'a Plan,
    pub(super) views: Vec<View<'a>>,
    pub(super) escalations: Vec<&'a EscalationRecord>,
    pub(super) criteria: Vec<Criterion>,
    /// Telemetry series of the measured models, in plan order.
    pub(super) series: Vec<(String, Series<'a>)>,
    pub(super) time_charts: Vec<TimeChart>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(input: &'a ReportInput) -> Self {
        let ver = &input.results.verification;
        let plan = &ver.plan;
        let cv = plan.defaults.cv_flag;
        let mut models: Vec<&ModelResult> = input.results.models.iter().collect();
        models.sort_by_key(|m| m.index);
        let views: Vec<View> = models
            .into_iter()
            .map(|r| {
                let spec = plan.models.iter().find(|s| s.name == r.model);
                let runs: Vec<&RunResult> = r.runs.iter().collect();
                View {
                    r,
                    host: ver.placement.as_ref().and_then(|p| p.host_of(r.index as usize)),
                    spec,
                    verdict: ver.verdicts.iter().find(|v| v.model == r.model),
                    all: Figures::of(&runs, cv),
                    settings: spec.map(|s| Effective::of(plan, s, r)),
                }
            })
            .collect();
        let mut escalations: Vec<&EscalationRecord> = input.troubleshooting.iter().collect();
        escalations.sort_by(|a, b| (&a.opened_at, &a.id).cmp(&(&b.opened_at, &b.id)));
        escalations.dedup_by(|a, b| a.id == b.id);
        let series: Vec<(String, Series<'a>)> = views
            .iter()
            .filter(|v| v.measured())
            .filter_map(|v| {
                let text = input.telemetry_series.get(&v.r.model)?;
                Some((v.r.model.clone(), Series::parse(text)?))
            })
            .collect();
        let time_charts = time_charts(&series);
        let criteria = criteria::criteria(plan, &ver.host, &views, &escalations);
        Ctx { input, plan, views, escalations, criteria, series, time_charts }
    }

    pub(super) fn measured(&self) -> impl Iterator<Item = &View<'a>> {
        self.views.iter().filter(|v| v.measured())
    }

    pub(super) fn cycle(&self) -> String {
        inline(&self.input.cycle)
    }

    /// Whether the cycle ran on several hosts (then results name their host).
    pub(super) fn several_hosts(&self) -> bool {
        !self.input.results.hosts.is_empty()
    }
}
