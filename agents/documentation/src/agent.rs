//! Documentation's phase: collect the results, the troubleshooting log and the full answers,
//! render every page, check links and tables, write `docs-out/<cycle>/` atomically, and tell Main.

use crate::checks::check_reports;
use crate::render::{ReportFile, ReportInput, render_reports};
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use protocol::events::{Event, EventBody};
use protocol::ids::derive_id;
use protocol::messages::{BenchmarkResults, ReportsPublished};
use protocol::results::{EscalationRecord, ModelStatus};
use protocol::{CycleId, Envelope, Payload, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Where reports go.
#[derive(Debug, Clone)]
pub struct DocsConfig {
    /// The root folder; each cycle gets `<root>/<cycle-id>/`.
    pub out_root: PathBuf,
}

/// Runs Documentation until `shutdown` turns true.
pub async fn run(
    bus: Bus,
    cfg: DocsConfig,
    shutdown: watch::Receiver<bool>,
    stats: Arc<ConsumeStats>,
) -> Result<(), BusError> {
    let docs = Docs { bus: bus.clone(), cfg };
    consume(&bus, shutdown, stats, &docs).await
}

struct Docs {
    bus: Bus,
    cfg: DocsConfig,
}

impl Handler for Docs {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::TroubleshootingLog(t) => {
                let key = format!("trouble.{cycle}.{}", t.entry.id);
                self.bus.results.put(&key, &t.entry).await.map_err(HandleError::from)?;
                Ok(())
            }
            Payload::BenchmarkResults(r) => match r.verification.placement.clone().filter(|p| p.hosts.len() > 1) {
                Some(placement) => self.collect_host(id, &cycle, *r, &placement).await,
                None => self.publish_reports(id, &cycle, *r).await,
            },
            other => Err(HandleError::Reject(format!("documentation does not take `{}` packages", other.kind()))),
        }
    }
}

/// One host's results as Documentation keeps them until every host's are in: the package they
/// came in and the results in the object store (they can be larger than a KV value).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct HostPart {
    package: Uuid,
    blob: protocol::results::BlobRef,
}

/// Where one host's results of a round are kept (0 at the start, then one round per resume: a
/// resumed cycle's report is the merge of its latest round, each host's Writer handing on all it
/// stored).
fn host_key(cycle: &CycleId, host: &str, round: u32) -> String {
    if round == 0 { format!("hostresults.{cycle}.{host}") } else { format!("hostresults.{cycle}.{host}.r{round}") }
}

impl Docs {
    /// Keeps one host's results of a several-host cycle; once every host's are in, merges them
    /// and writes the one report set. Each arrival is kept (`hostresults.<cycle>.<host>`,
    /// create-if-absent) before its package is acked, so a restart loses none.
    async fn collect_host(
        &self,
        pkg: Uuid,
        cycle: &CycleId,
        results: BenchmarkResults,
        placement: &protocol::messages::Placement,
    ) -> Handled {
        let host = results.verification.host.host_id.clone();
        if !placement.hosts.contains(&host) {
            return Err(HandleError::Reject(format!(
                "results from host `{host}`, which cycle `{cycle}` was not placed on (hosts: {})",
                placement.hosts.join(", ")
            )));
        }
        let key = host_key(cycle, &host, placement.round);
        if self.bus.results.get::<HostPart>(&key).await.map_err(HandleError::from)?.is_none() {
            let bytes = serde_json::to_vec(&results)
                .map_err(|e| HandleError::Reject(format!("results from host `{host}` cannot be stored: {e}")))?;
            let blob = self
                .bus
                .put_blob(&format!("hostresults/{cycle}/{host}/r{}", placement.round), &bytes)
                .await
                .map_err(HandleError::from)?;
            self.bus.results.create(&key, &HostPart { package: pkg, blob }).await.map_err(HandleError::from)?;
        }
        let mut parts = Vec::new();
        let mut first_pkg: Option<Uuid> = None;
        for h in &placement.hosts {
            let Some(part) = self
                .bus
                .results
                .get::<HostPart>(&host_key(cycle, h, placement.round))
                .await
                .map_err(HandleError::from)?
            else {
                tracing::info!(message = "Waiting for the other hosts' results.", %cycle, waiting_for = %h);
                return Ok(());
            };
            let bytes = self.bus.get_blob(&part.blob).await.map_err(HandleError::from)?;
            let r: BenchmarkResults = serde_json::from_slice(&bytes)
                .map_err(|e| HandleError::Reject(format!("the stored results of host `{h}` are not readable: {e}")))?;
            first_pkg = Some(first_pkg.map_or(part.package, |p| p.min(part.package)));
            parts.push(r);
        }
        let merged = crate::merge::merge(placement, parts).map_err(|e| HandleError::Reject(e.to_string()))?;
        // The reports' package id comes from the hosts' packages, not from whichever arrived
        // last, so any redelivery publishes the same id.
        self.publish_reports(first_pkg.unwrap_or(pkg), cycle, merged).await
    }

    async fn troubleshooting(&self, cycle: &CycleId, ids: &[String]) -> Result<Vec<EscalationRecord>, BusError> {
        let mut out = Vec::new();
        for id in ids {
            // Debug's log entry when it arrived; the escalation record itself otherwise.
            let rec = match self.bus.results.get::<EscalationRecord>(&format!("trouble.{cycle}.{id}")).await? {
                Some(r) => Some(r),
                None => self.bus.escalations.get::<EscalationRecord>(id).await?,
            };
            if let Some(r) = rec {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn publish_reports(&self, pkg: Uuid, cycle: &CycleId, results: BenchmarkResults) -> Handled {
        let troubleshooting = self.troubleshooting(cycle, &results.escalations).await.map_err(HandleError::from)?;
        let mut answers = BTreeMap::new();
        let mut answer_files = Vec::new();
        for m in &results.models {
            for r in &m.runs {
                let Some(blob) = &r.answer else { continue };
                match self.bus.get_blob(blob).await {
                    Ok(bytes) => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        answer_files.push(ReportFile {
                            path: format!("data/answers/{}/{}-r{}.txt", m.model, r.prompt_id, r.repetition),
                            bytes: crate::render::terminal_safe(&text).into_bytes(),
                        });
                        answers.insert(blob.key.clone(), text);
                    }
                    Err(error) => {
                        tracing::warn!(message = "Answer not available; the report keeps the excerpt.", %error)
                    }
                }
            }
        }
        let mut telemetry_series = BTreeMap::new();
        for m in &results.models {
            let Some(blob) = m.telemetry.as_ref().and_then(|t| t.series.as_ref()) else { continue };
            match self.bus.get_blob(blob).await {
                Ok(bytes) => {
                    telemetry_series.insert(m.model.clone(), String::from_utf8_lossy(&bytes).into_owned());
                }
                Err(error) => {
                    tracing::warn!(message = "Telemetry series not available; charts over time omitted.", %error)
                }
            }
        }
        let input = ReportInput {
            cycle: cycle.to_string(),
            results: results.clone(),
            troubleshooting,
            answers,
            telemetry_series,
        };
        let mut files = render_reports(&input);
        for problem in check_reports(&files) {
            tracing::warn!(message = "Report check found a problem.", %problem);
        }
        files.extend(answer_files);
        let dir = self.cfg.out_root.join(cycle.as_str());
        write_atomically(&dir, &files).map_err(|e| HandleError::Retry { reason: e, after: Duration::from_secs(5) })?;
        let measured = results.models.iter().filter(|m| m.status == ModelStatus::Measured).count() as u32;
        let dir_s = dir.display().to_string();
        self.bus
            .event_best_effort(Event::new(
                cycle.clone(),
                Role::Documentation,
                EventBody::ReportsWritten { dir: dir_s.clone() },
            ))
            .await;
        let env = Envelope {
            id: derive_id(pkg, "reports-published", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Documentation,
                Role::Main,
                Some(pkg),
                Payload::ReportsPublished(ReportsPublished {
                    dir: dir_s,
                    files: files.iter().map(|f| f.path.clone()).collect(),
                    measured,
                    not_measured: results.models.len() as u32 - measured,
                    aborted: results.aborted.clone(),
                }),
            )
        };
        self.bus.publish(&env).await.map_err(HandleError::from)?;
        Ok(())
    }
}

/// Writes every file under a temporary sibling folder, then swaps it into place, so a reader
/// never sees half a report and a rerun replaces the old one whole.
pub fn write_atomically(dir: &Path, files: &[ReportFile]) -> Result<(), String> {
    let parent = dir.parent().ok_or_else(|| format!("{} has no parent folder", dir.display()))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for f in files {
        let rel = Path::new(&f.path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(format!("refusing to write {} outside the report folder", f.path));
        }
        let p = tmp.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        std::fs::write(&p, &f.bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| format!("cannot move the old report aside: {e}"))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("cannot move the report into {}: {e}", dir.display()))
}
