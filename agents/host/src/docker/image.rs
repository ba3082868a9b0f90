//! Pulling an engine's image from its registry: progress folded from the engine's per-layer
//! messages, and failures classed in the operator's terms with the command to run by hand.

use std::collections::HashMap;
use std::time::Instant;

use bollard::errors::Error as BollardError;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use super::error::engine_message;
use super::{DockerError, DockerRuntime};

/// Why a pull failed, as far as the engine's message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// The registry has no such repository or tag.
    NotFound,
    /// The registry could not be reached (DNS, refused, timed out, TLS).
    NoNetwork,
    /// The registry wants credentials, or refused the ones given.
    Auth,
    /// Anything else the engine said.
    Other,
}

impl PullFailure {
    /// Classes the engine's error text (`docker pull` prints the same text).
    pub fn classify(message: &str) -> Self {
        let m = message.to_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
        if any(&["unauthorized", "authentication required", "no basic auth credentials", "denied: ", "401"]) {
            PullFailure::Auth
        } else if any(&[
            "dial tcp",
            "no such host",
            "connection refused",
            "i/o timeout",
            "network is unreachable",
            "tls handshake timeout",
            "context deadline exceeded",
            "temporary failure in name resolution",
            "server misbehaving",
        ]) {
            PullFailure::NoNetwork
        } else if any(&["manifest unknown", "not found", "repository does not exist", "name unknown"]) {
            PullFailure::NotFound
        } else {
            PullFailure::Other
        }
    }

    /// The failure in words, with what to do about it.
    pub fn advice(self) -> &'static str {
        match self {
            PullFailure::NotFound => "the registry has no such image or tag: check the name and tag in the plan",
            PullFailure::NoNetwork => {
                "the registry could not be reached: pull it where there is a network, or `docker load` a saved copy"
            }
            PullFailure::Auth => "the registry refused access: run `docker login <registry>` first",
            PullFailure::Other => "the engine refused the pull",
        }
    }
}

/// Folds the engine's per-layer pull messages into totals over all layers seen so far.
#[derive(Debug, Default)]
pub struct PullProgress {
    /// Per layer id: (bytes downloaded, layer size).
    layers: HashMap<String, (u64, u64)>,
}

impl PullProgress {
    /// Take one message; returns `(completed, total)` when it carried download figures.
    ///
    /// `Downloading` carries current/total per layer; `Download complete`, `Pull complete` and
    /// `Already exists` end a layer (one already on the host adds nothing to either sum).
    pub fn fold(&mut self, info: &CreateImageInfo) -> Option<(u64, u64)> {
        let id = info.id.as_deref()?;
        let status = info.status.as_deref().unwrap_or_default();
        let detail = info.progress_detail.as_ref();
        let as_u64 = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        match status {
            "Downloading" => {
                let total = as_u64(detail.and_then(|d| d.total))?;
                let current = as_u64(detail.and_then(|d| d.current)).unwrap_or(0).min(total);
                self.layers.insert(id.to_string(), (current, total));
            }
            "Download complete" | "Pull complete" => {
                let entry = self.layers.get_mut(id)?;
                entry.0 = entry.1;
            }
            _ => return None,
        }
        Some(self.totals())
    }

    /// Bytes downloaded and bytes to download over the layers seen so far.
    pub fn totals(&self) -> (u64, u64) {
        self.layers.values().fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt))
    }
}

/// What a finished pull did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePull {
    /// Bytes downloaded (layers already present not counted).
    pub bytes: u64,
    /// How long it took, seconds.
    pub seconds: f64,
}

impl DockerRuntime {
    /// Pull `image` from its registry, calling `progress(completed, total, rate_bps)` as layers
    /// download. Failures are [`DockerError::PullFailed`], classed and naming `docker pull`.
    pub async fn pull_image(
        &self,
        image: &str,
        mut progress: impl FnMut(u64, u64, f64),
    ) -> Result<ImagePull, DockerError> {
        let started = Instant::now();
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        let mut fold = PullProgress::default();
        let failed = |message: String| DockerError::PullFailed {
            image: image.to_string(),
            kind: PullFailure::classify(&message),
            message,
        };
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| failed(pull_message(&e)))?;
            if let Some(err) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                return Err(failed(err));
            }
            if let Some((done, total)) = fold.fold(&info) {
                let secs = started.elapsed().as_secs_f64();
                progress(done, total, if secs > 0.0 { done as f64 / secs } else { 0.0 });
            }
        }
        // The stream can end without an error message and without the image: check.
        if !self.image_present(image).await? {
            return Err(failed("the engine's pull ended but the image is not on the host".to_string()));
        }
        Ok(ImagePull { bytes: fold.totals().0, seconds: started.elapsed().as_secs_f64() })
    }
}

/// The engine's own words for a failed pull.
fn pull_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerStreamError { error } => error.trim().to_string(),
        other => engine_message(other),
    }
}
