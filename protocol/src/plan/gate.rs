//! What the plan says about host checks before anything is deployed: the image the
//! GPU-in-container check runs, and what a failed check does to the cycle.

use super::HostRequirements;
use serde::{Deserialize, Serialize};

/// The image the GPU-in-container check runs `nvidia-smi` in when the plan names none (the
/// `base` flavour: the CUDA user-space set-up without the toolkit; the NVIDIA runtime mounts
/// `nvidia-smi` in).
pub const DEFAULT_GPU_CHECK_IMAGE: &str = "nvidia/cuda:12.4.1-base-ubuntu22.04";

/// What a failed host check (too little disk, a hot idle GPU, a failed allocation, no GPU in a
/// container…) does before anything is deployed (`policy.failed_checks`). Checks that only warn
/// or could not be measured never stop a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedChecks {
    /// Raise an escalation and wait for the operator (continue anyway, fix and re-verify, skip
    /// the affected models, abort); nothing is deployed until it is answered.
    #[default]
    Ask,
    /// Record the failure in the escalation log and go on as if it had passed.
    Continue,
    /// Record it and abort the cycle before anything is deployed.
    Abort,
}

impl HostRequirements {
    /// The image of the GPU-in-container check: the plan's, else [`DEFAULT_GPU_CHECK_IMAGE`].
    pub fn gpu_check_image(&self) -> &str {
        self.gpu_check_image.as_deref().unwrap_or(DEFAULT_GPU_CHECK_IMAGE)
    }
}

/// Why `image` is not a usable image reference (`[registry/]name[:tag][@digest]`), if it is not.
pub fn image_reference_problem(image: &str) -> Option<String> {
    if image.trim().is_empty() {
        return Some("must not be empty: name an image such as `nvidia/cuda:12.4.1-base-ubuntu22.04`".into());
    }
    if let Some(c) = image.chars().find(|c| !(c.is_ascii_alphanumeric() || "./:-_@".contains(*c))) {
        return Some(format!("`{image}` holds `{c}`, which no image reference can: use `[registry/]name[:tag]`"));
    }
    let name = image.split('@').next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    let repo = last.split(':').next().unwrap_or_default();
    if repo.is_empty() || name.ends_with(':') || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some(format!("`{image}` is not an image reference: use `[registry/]name[:tag]`"));
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("`{image}`: image names are lower case"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked() {
        for ok in [DEFAULT_GPU_CHECK_IMAGE, "busybox", "ghcr.io/x/y:1.2", "localhost:5000/cuda:12", "a/b@sha256:0f"] {
            assert_eq!(image_reference_problem(ok), None, "{ok}");
        }
        for bad in ["", " ", "nvidia/cuda:", "nvidia//cuda", "/cuda", "nvidia/cuda 12", "NVIDIA/CUDA", "cuda;rm"] {
            assert!(image_reference_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert_eq!(HostRequirements::default().gpu_check_image(), DEFAULT_GPU_CHECK_IMAGE);
    }
}
