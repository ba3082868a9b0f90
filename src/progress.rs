//! How `up` shows a cycle's progress: on a terminal, the requests bar with one bar per pull under
//! way above it (model pulls and Docker image pulls, several at once: a pull-ahead next to a
//! deployment, or one per host) with bytes done, rate and time left, as `ollama pull` and
//! `docker compose pull` show them; plain lines when piped; with `--json`, every event as one
//! JSON object per line on stdout and the rest on stderr.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::events::{Event, EventBody, Step, pull_rate_text};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// What a pull event says: which pull (`model <tag>` or `image <ref>`) and its figures, or that
/// it ended.
#[derive(Debug, PartialEq)]
pub enum PullUpdate {
    /// Bytes done of the total, bytes per second, and a label (the layer).
    Progress { key: String, completed: Option<u64>, total: Option<u64>, rate_bps: Option<f64>, label: String },
    /// The pull is over (done, or failed).
    Ended { key: String },
}

/// The pull an event reports on, if it does.
pub fn pull_update(body: &EventBody) -> Option<PullUpdate> {
    let EventBody::Step { step, .. } = body else { return None };
    Some(match step {
        Step::Pulling { model, digest, completed, total, rate_bps } => PullUpdate::Progress {
            key: format!("model {model}"),
            completed: *completed,
            total: *total,
            rate_bps: *rate_bps,
            label: digest.clone().unwrap_or_default(),
        },
        Step::ImagePulling { image, completed, total, rate_bps } => PullUpdate::Progress {
            key: format!("image {image}"),
            completed: *completed,
            total: *total,
            rate_bps: *rate_bps,
            label: String::new(),
        },
        Step::Pulled { model, .. }
        | Step::PullAheadDone { model, .. }
        | Step::PullAheadFailed { model, .. }
        | Step::ModelPresent { model } => PullUpdate::Ended { key: format!("model {model}") },
        Step::ImagePulled { image, .. } => PullUpdate::Ended { key: format!("image {image}") },
        _ => return None,
    })
}

/// The progress view of one `up`.
pub struct Progress {
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    pulls: Mutex<BTreeMap<String, ProgressBar>>,
    json: bool,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl Progress {
    /// Bars on a terminal (stderr), plain lines otherwise.
    pub fn new(total: u64, json: bool) -> Self {
        if json || !std::io::stderr().is_terminal() {
            return Progress { multi: None, bar: None, pulls: Mutex::default(), json };
        }
        Self::with_target(total, ProgressDrawTarget::stderr())
    }

    /// Bars drawn to `target` (tests draw nowhere).
    pub fn with_target(total: u64, target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(style("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} requests  {wide_msg}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { multi: Some(multi), bar: Some(bar), pulls: Mutex::default(), json: false }
    }

    /// The requests bar, on a terminal.
    pub fn bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
    }

    /// Whether events go out as JSON lines.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The pulls with a bar now.
    #[cfg(test)]
    fn pulls_shown(&self) -> Vec<String> {
        self.pulls.lock().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }

    /// Shows one event.
    pub fn event(&self, ev: &Event) {
        if self.json {
            println!("{}", crate::follow::render(ev, true));
            return;
        }
        let line = crate::display::clean(&ev.line());
        let (Some(multi), Some(bar)) = (&self.multi, &self.bar) else {
            println!("{line}");
            return;
        };
        match pull_update(&ev.body) {
            Some(PullUpdate::Progress { key, completed, total, rate_bps, label }) => {
                self.pull_bar(multi, bar, &key, completed, total, rate_bps, &label);
                return;
            }
            Some(PullUpdate::Ended { key }) => {
                if let Some(b) = self.pulls.lock().ok().and_then(|mut p| p.remove(&key)) {
                    b.finish_and_clear();
                    multi.remove(&b);
                }
                bar.println(&line);
                return;
            }
            None => {}
        }
        if matches!(ev.body, EventBody::RunMeasured { .. }) {
            bar.inc(1);
        }
        bar.set_message(line.clone());
        if matches!(
            ev.body,
            EventBody::ModelFinished { .. }
                | EventBody::EscalationOpened { .. }
                | EventBody::EscalationDecided { .. }
                | EventBody::CycleStarted { .. }
        ) {
            bar.println(line);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pull_bar(
        &self,
        multi: &MultiProgress,
        main: &ProgressBar,
        key: &str,
        completed: Option<u64>,
        total: Option<u64>,
        rate_bps: Option<f64>,
        label: &str,
    ) {
        let Ok(mut pulls) = self.pulls.lock() else { return };
        let b = pulls
            .entry(key.to_string())
            .or_insert_with(|| {
                let b = multi.insert_before(main, ProgressBar::new(0));
                b.set_style(style("  {prefix} [{bar:30}] {bytes}/{total_bytes}  {wide_msg}"));
                b.set_prefix(crate::display::clean(key));
                b
            })
            .clone();
        drop(pulls);
        if let Some(t) = total {
            b.set_length(t);
        }
        if let Some(d) = completed {
            b.set_position(d);
        }
        let rate = pull_rate_text(completed, total, rate_bps);
        let label = crate::display::clean(label);
        b.set_message(match (rate.is_empty(), label.is_empty()) {
            (true, true) => String::new(),
            (false, true) => rate,
            (true, false) => format!("layer {label}"),
            (false, false) => format!("{rate} (layer {label})"),
        });
    }

    /// A line of text, above the bars on a terminal (stderr with `--json`).
    pub fn println(&self, s: &str) {
        let s = crate::display::clean(s);
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{s}")),
            None if self.json => eprintln!("{s}"),
            None => println!("{s}"),
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Ok(mut pulls) = self.pulls.lock() {
            for (_, b) in std::mem::take(&mut *pulls) {
                b.finish_and_clear();
            }
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CycleId, Role};

    fn step(step: Step) -> Event {
        Event::new(CycleId::parse("c1").expect("id"), Role::Writer, EventBody::Step { model: "m".into(), step })
    }

    fn pulling(model: &str, done: u64) -> Step {
        Step::Pulling {
            model: model.into(),
            digest: Some("6a07".into()),
            completed: Some(done),
            total: Some(1000),
            rate_bps: Some(100.0),
        }
    }

    #[test]
    fn several_pulls_get_a_bar_each_until_they_end() {
        let p = Progress::with_target(4, ProgressDrawTarget::hidden());
        p.event(&step(pulling("a:7b", 100)));
        p.event(&step(Step::PullAhead { model: "b:70b".into(), measuring: "a".into() }));
        p.event(&step(pulling("b:70b", 500)));
        p.event(&step(Step::ImagePulling {
            image: "ollama/ollama".into(),
            completed: Some(1),
            total: Some(2),
            rate_bps: None,
        }));
        assert_eq!(p.pulls_shown(), ["image ollama/ollama", "model a:7b", "model b:70b"]);
        let bars = p.pulls.lock().expect("lock");
        let b = bars.get("model b:70b").expect("a bar");
        assert_eq!((b.position(), b.length()), (500, Some(1000)));
        assert_eq!(b.message(), "100 B/s, 5s left (layer 6a07)");
        drop(bars);
        p.event(&step(Step::Pulled { model: "a:7b".into(), bytes: 1000, seconds: 9.0 }));
        p.event(&step(Step::PullAheadFailed { model: "b:70b".into(), error: "x".into() }));
        p.event(&step(Step::ImagePulled { image: "ollama/ollama".into(), bytes: 2, seconds: 1.0 }));
        assert!(p.pulls_shown().is_empty());
        p.finish();
    }

    #[test]
    fn only_pull_steps_are_pull_updates() {
        assert_eq!(pull_update(&step(Step::WarmupDone).body), None);
        assert_eq!(
            pull_update(&step(Step::ModelPresent { model: "x".into() }).body),
            Some(PullUpdate::Ended { key: "model x".into() })
        );
    }
}
