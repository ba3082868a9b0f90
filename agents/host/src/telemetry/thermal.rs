//! The thermal guard the Writer consults between requests: pause at the plan's temperature
//! limit, resume below its resume point, escalate when it does not cool in time.

use std::time::{Duration, Instant};

use protocol::plan::Criteria;
use protocol::results::ThermalPause;

use super::Sampler;

/// What the Writer does before its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardDecision {
    /// Send it.
    Proceed,
    /// Wait: the GPU is too hot.
    Pause,
    /// Stop and escalate to Debug: it did not cool in time.
    Escalate,
}

/// The plan's thermal limits: pause at `max_c`, resume below `resume_c`, give up after `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThermalGuard {
    /// Temperature at or above which requests pause, °C.
    pub max_c: f64,
    /// Temperature below which a pause ends, °C.
    pub resume_c: f64,
    /// Longest pause before escalating.
    pub max_wait: Duration,
}

impl ThermalGuard {
    /// The seed plan's sustained limit, °C.
    pub const SEED_MAX_C: f64 = 70.0;
    /// Resume this far below the limit when the plan names no resume temperature, °C.
    pub const DEFAULT_HYSTERESIS_C: f64 = 5.0;

    /// The guard for the plan's criteria; `None` when it sets no temperature limit.
    pub fn from_criteria(c: &Criteria, max_wait: Duration) -> Option<ThermalGuard> {
        let max_c = c.max_temp_c?;
        Some(ThermalGuard { max_c, resume_c: c.resume_temp_c.unwrap_or(max_c - Self::DEFAULT_HYSTERESIS_C), max_wait })
    }

    /// What to do given the hottest GPU now (`None`: no GPU) and how long the current pause
    /// has lasted (`None`: not pausing).
    pub fn decide(&self, temp_now: Option<f64>, paused_for: Option<Duration>) -> GuardDecision {
        let Some(t) = temp_now else {
            return GuardDecision::Proceed;
        };
        match paused_for {
            None if t >= self.max_c => GuardDecision::Pause,
            None => GuardDecision::Proceed,
            Some(_) if t < self.resume_c => GuardDecision::Proceed,
            Some(waited) if waited >= self.max_wait => GuardDecision::Escalate,
            Some(_) => GuardDecision::Pause,
        }
    }

    /// Between requests: returns at once when the GPU is below the limit (or absent); else
    /// calls `on_pause(temp)`, waits until it cools below `resume_c` and returns the pause, or
    /// `Err` with the unrecovered pause after `max_wait`. The pause is also recorded in the
    /// sampler's summary.
    pub async fn wait_until_cool(
        &self,
        sampler: &Sampler,
        on_pause: impl FnOnce(f64),
    ) -> Result<Option<ThermalPause>, ThermalPause> {
        // Poll at the sampling rate (at least every 100 ms, at most every second).
        let poll = Duration::from_secs_f64((1.0 / sampler.hz()).clamp(0.1, 1.0));
        let result =
            self.wait_until_cool_with(|| sampler.latest().gpu_temp_c, sampler.elapsed_s(), poll, on_pause).await;
        match &result {
            Ok(Some(p)) | Err(p) => sampler.record_pause(p.clone()),
            Ok(None) => {}
        }
        result
    }

    /// [`ThermalGuard::wait_until_cool`] reading the temperature from `read_temp` every `poll`;
    /// `at_s` is the run time the pause is recorded at.
    pub async fn wait_until_cool_with(
        &self,
        mut read_temp: impl FnMut() -> Option<f64>,
        at_s: f64,
        poll: Duration,
        on_pause: impl FnOnce(f64),
    ) -> Result<Option<ThermalPause>, ThermalPause> {
        let temp = read_temp();
        let (GuardDecision::Pause, Some(hot)) = (self.decide(temp, None), temp) else {
            return Ok(None);
        };
        on_pause(hot);
        let began = Instant::now();
        loop {
            tokio::time::sleep(poll).await;
            let waited = began.elapsed();
            let pause = |recovered| ThermalPause { at_s, temp_c: hot, waited_s: waited.as_secs_f64(), recovered };
            match self.decide(read_temp(), Some(waited)) {
                GuardDecision::Proceed => return Ok(Some(pause(true))),
                GuardDecision::Escalate => return Err(pause(false)),
                GuardDecision::Pause => {}
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::telemetry::tests::{double, samples};
    use crate::telemetry::{EngineTarget, Sampler};

    pub(in crate::telemetry) fn guard() -> ThermalGuard {
        ThermalGuard { max_c: ThermalGuard::SEED_MAX_C, resume_c: 65.0, max_wait: Duration::from_secs(300) }
    }

    #[test]
    fn guard_decisions() {
        use GuardDecision::*;
        let g = guard();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(g.decide(Some(62.0), None), Proceed, "below the limit");
        assert_eq!(g.decide(Some(69.9), None), Proceed, "just below the limit");
        assert_eq!(g.decide(Some(70.0), None), Pause, "at the limit");
        assert_eq!(g.decide(Some(78.0), None), Pause, "over the limit");
        assert_eq!(g.decide(Some(67.0), secs(10)), Pause, "cooler but not below resume");
        assert_eq!(g.decide(Some(64.0), secs(10)), Proceed, "cooled below resume");
        assert_eq!(g.decide(Some(71.0), secs(300)), Escalate, "still hot after max_wait");
        assert_eq!(g.decide(Some(64.0), secs(900)), Proceed, "cool beats late");
        assert_eq!(g.decide(None, None), Proceed, "no GPU");
        assert_eq!(g.decide(None, secs(900)), Proceed, "no GPU, even mid-pause");

        let criteria = Criteria { max_temp_c: Some(70.0), ..Criteria::default() };
        let from = ThermalGuard::from_criteria(&criteria, Duration::from_secs(60)).unwrap();
        assert_eq!((from.max_c, from.resume_c), (70.0, 65.0));
        assert_eq!(ThermalGuard::from_criteria(&Criteria::default(), Duration::ZERO), None);
    }

    #[tokio::test]
    async fn guard_waits_for_cooling_or_escalates() {
        let g = ThermalGuard { max_wait: Duration::from_millis(300), ..guard() };
        let poll = Duration::from_millis(10);

        let cool = g.wait_until_cool_with(|| Some(55.0), 1.0, poll, |_| panic!("no pause")).await;
        assert_eq!(cool, Ok(None));
        let no_gpu = g.wait_until_cool_with(|| None, 1.0, poll, |_| panic!("no pause")).await;
        assert_eq!(no_gpu, Ok(None));

        let mut temps = [74.0, 72.0, 68.0, 64.0].into_iter();
        let mut paused_at = None;
        let p = g.wait_until_cool_with(|| temps.next(), 12.5, poll, |t| paused_at = Some(t)).await.unwrap().unwrap();
        assert_eq!(paused_at, Some(74.0));
        assert_eq!((p.at_s, p.temp_c, p.recovered), (12.5, 74.0, true));
        assert!(p.waited_s >= 0.03 && p.waited_s < 0.3, "{}", p.waited_s);

        let hot = g.wait_until_cool_with(|| Some(75.0), 3.0, poll, |_| {}).await.unwrap_err();
        assert!(!hot.recovered);
        assert!(hot.waited_s >= 0.3, "{}", hot.waited_s);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_double_the_guard_pauses_past_the_limit_and_resumes_when_it_cools() {
        // Five cool reads, ten over the 70 °C limit, then below the 65 °C resume point.
        let (_d, gpus) = double("gpu0.memory_total = 16GiB\ngpu0.temperature = 60*5, 75*10, 62\n");
        let sampler = Sampler::start(EngineTarget::None, 10.0, gpus);
        let g = ThermalGuard { max_wait: Duration::from_secs(10), ..guard() };
        sampler.first_sample(Duration::from_secs(20)).await;
        assert!(sampler.latest().samples >= 1);
        assert_eq!(g.wait_until_cool(&sampler, |_| panic!("60 °C: no pause")).await, Ok(None));
        samples(&sampler, 6).await;
        let mut paused_at = None;
        let pause = g.wait_until_cool(&sampler, |t| paused_at = Some(t)).await.unwrap().unwrap();
        assert_eq!(paused_at, Some(75.0));
        assert!(pause.recovered && pause.waited_s < 5.0, "{pause:?}");
        assert!(sampler.latest().gpu_temp_c.is_some_and(|t| t < 65.0));
        let (s, _) = sampler.finish(0).await;
        assert_eq!(s.thermal_pauses, vec![pause]);
        let t = s.gpu_temp_c.unwrap();
        assert_eq!((t.peak, t.min), (75.0, 60.0));
    }
}
