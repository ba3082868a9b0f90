//! GPU energy over a run: the NVML energy counter when it can be trusted, else the integral of
//! power over time.

use std::collections::BTreeMap;

use crate::gpu::GpuSample;

/// GPU energy over a run: the NVML energy counter when every sample had it, else the
/// trapezoid integral of total power.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyMeter {
    first_mj: BTreeMap<u32, u64>,
    last_mj: BTreeMap<u32, u64>,
    /// False once a sample lacked a counter or a counter went backwards (driver reload).
    counter_ok: bool,
    samples: u64,
    integral_j: f64,
    integral_ok: bool,
    prev_power: Option<(f64, f64)>,
}

impl EnergyMeter {
    /// Source names recorded in [`TelemetrySummary::energy_source`](protocol::results::TelemetrySummary::energy_source).
    pub const COUNTER: &str = "nvml energy counter";
    /// See [`EnergyMeter::COUNTER`].
    pub const INTEGRAL: &str = "power integral";

    /// Adds the GPUs' readings taken `t_s` seconds in (nothing to add without GPUs).
    pub fn add(&mut self, t_s: f64, gpus: &[GpuSample]) {
        if gpus.is_empty() {
            return;
        }
        if self.samples == 0 {
            self.counter_ok = true;
            self.integral_ok = true;
        }
        self.samples += 1;
        for g in gpus {
            match g.energy_mj {
                Some(mj) => {
                    self.first_mj.entry(g.index).or_insert(mj);
                    let prev = self.last_mj.insert(g.index, mj);
                    if prev.is_some_and(|p| mj < p) {
                        self.counter_ok = false;
                    }
                }
                None => self.counter_ok = false,
            }
        }
        let power: Option<f64> = gpus.iter().map(|g| g.power_w).sum();
        match power {
            Some(w) => {
                if let Some((t0, w0)) = self.prev_power {
                    self.integral_j += (t_s - t0).max(0.0) * (w0 + w) / 2.0;
                }
                self.prev_power = Some((t_s, w));
            }
            None => self.integral_ok = false,
        }
    }

    /// Joules over the samples and where the figure came from; `None` without two GPU samples.
    pub fn result(&self) -> Option<(f64, &'static str)> {
        if self.samples < 2 {
            return None;
        }
        if self.counter_ok {
            let mj: u64 = self
                .last_mj
                .iter()
                .map(|(i, last)| last.saturating_sub(self.first_mj.get(i).copied().unwrap_or(*last)))
                .sum();
            return Some((mj as f64 / 1000.0, Self::COUNTER));
        }
        self.integral_ok.then_some((self.integral_j, Self::INTEGRAL))
    }
}
