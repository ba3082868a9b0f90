//! Images: whether one is present, and building one from a directory with a `Dockerfile`.

use std::path::Path;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;

use super::error::{engine_message, is_not_found};
use super::{BUILD_LOG_LINES, DockerError, DockerRuntime};

impl DockerRuntime {
    /// Whether the image is present on this host.
    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(DockerError::Api { action: "inspect image", target: image.to_string(), source }),
        }
    }

    /// Build an image from a directory holding a `Dockerfile`; returns the image id.
    ///
    /// The directory is packed into a tar in memory; build output goes to `tracing` (debug)
    /// and the last lines come back in [`DockerError::Build`] on failure.
    pub async fn build_image(&self, tag: &str, context_dir: &Path) -> Result<String, DockerError> {
        let dir = context_dir.to_path_buf();
        let context = tokio::task::spawn_blocking(move || pack_context(&dir))
            .await
            .map_err(|e| DockerError::Context {
                path: context_dir.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| DockerError::Context { path: context_dir.to_path_buf(), source })?;
        let options =
            BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(tag).rm(true).forcerm(true).build();
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut log: Vec<String> = Vec::new();
        let mut image_id = None;
        let fail = |message: String, log: &[String]| DockerError::Build {
            tag: tag.to_string(),
            message,
            log_tail: log[log.len().saturating_sub(BUILD_LOG_LINES)..].to_vec(),
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(fail(error.trim().to_string(), &log));
                }
                Err(e) => return Err(fail(engine_message(&e), &log)),
            };
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!(image = %tag, "{line}");
                    log.push(line.to_string());
                }
                if log.len() > 4 * BUILD_LOG_LINES {
                    log.drain(..log.len() - BUILD_LOG_LINES);
                }
            }
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".to_string());
                return Err(fail(message.trim().to_string(), &log));
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        Ok(image_id.unwrap_or_else(|| tag.to_string()))
    }
}

/// Tar the directory's contents (paths relative to it) into memory.
fn pack_context(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}
