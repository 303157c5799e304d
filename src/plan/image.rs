//! Which image a row runs (DESIGN §1.3): the explicit `image` column, else
//! the pin for the row's ring, then for `stable`, else the moving tag.

use crate::model::{ImageRef, ImageSource, RuntimeRow, WorkspaceRow};

use super::spec::InvalidSpec;
use super::{Catalogue, Settings};

/// The repository local-build mode tags its builds under.
pub const LOCAL_BUILD_REPOSITORY: &str = "molecule-local";

/// The reference, where it came from, and the runtime's catalogue row
/// (absent for an explicit image of a runtime the catalogue lacks).
pub fn choose<'c>(
    row: &WorkspaceRow,
    catalogue: &'c Catalogue,
    settings: &Settings,
) -> Result<(ImageRef, ImageSource, Option<&'c RuntimeRow>), InvalidSpec> {
    let runtime = catalogue.runtime(&row.runtime);
    if let Some(explicit) = row.image.as_deref().filter(|s| !s.is_empty()) {
        let image = parse(explicit, "image")?;
        return Ok((image, ImageSource::Explicit, runtime));
    }
    let runtime = runtime.ok_or_else(|| {
        InvalidSpec::invalid(format!(
            "runtime {:?} is not in the runtimes catalogue and the row has no image",
            row.runtime.chars().take(64).collect::<String>()
        ))
    })?;
    // A pin wins in registry mode. Without a registry prefix (local-build
    // mode) a pin names `<image_repository>@<digest>`, and wins only when
    // that repository names its registry: pins are fleet-wide, and one
    // meant for registry hosts must not send a host without a registry to
    // pull from Docker Hub.
    let (repository, pins_apply) = match settings.registry_prefix.as_deref() {
        Some(prefix) => (
            format!(
                "{}/{}",
                prefix.trim_end_matches('/'),
                runtime.image_repository
            ),
            true,
        ),
        None => (
            runtime.image_repository.clone(),
            names_registry(&runtime.image_repository),
        ),
    };
    if pins_apply && !settings.local_override {
        for ring in [row.ring.as_str(), "stable"] {
            if let Some(digest) = catalogue.pin(&runtime.name, ring) {
                let image = parse(&format!("{repository}@{digest}"), "pinned image")?;
                let source = ImageSource::Pinned { ring: ring.into() };
                return Ok((image, source, Some(runtime)));
            }
        }
    }
    let (text, source) = match (settings.registry_prefix.is_some(), settings.local_override) {
        (true, false) => (format!("{repository}:latest"), ImageSource::Tag),
        (true, true) => (format!("{repository}:latest"), ImageSource::LocalOnly),
        (false, false) => (
            local_build_reference(&runtime.name),
            ImageSource::LocalBuild {
                runtime: runtime.name.clone(),
            },
        ),
        (false, true) => (local_build_reference(&runtime.name), ImageSource::LocalOnly),
    };
    Ok((parse(&text, "runtime image")?, source, Some(runtime)))
}

/// Whether a repository's first component names a registry host (a dot,
/// a port or `localhost`, as Docker reads it). In local-build mode only a
/// runtime whose `image_repository` does follows its pins.
pub fn names_registry(repository: &str) -> bool {
    match repository.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// The `:latest` tag local-build mode gives a runtime's builds.
fn local_build_reference(runtime: &str) -> String {
    format!("{LOCAL_BUILD_REPOSITORY}/workspace-template-{runtime}:latest")
}

fn parse(text: &str, what: &str) -> Result<ImageRef, InvalidSpec> {
    ImageRef::parse(text).map_err(|e| InvalidSpec::invalid(format!("{what}: {e}")))
}
