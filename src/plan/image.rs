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
    let Some(prefix) = settings.registry_prefix.as_deref() else {
        let text = format!(
            "{LOCAL_BUILD_REPOSITORY}/workspace-template-{}:latest",
            runtime.name
        );
        let source = if settings.local_override {
            ImageSource::LocalOnly
        } else {
            ImageSource::LocalBuild {
                runtime: runtime.name.clone(),
            }
        };
        return Ok((parse(&text, "local-build image")?, source, Some(runtime)));
    };
    let repository = format!(
        "{}/{}",
        prefix.trim_end_matches('/'),
        runtime.image_repository
    );
    if !settings.local_override {
        for ring in [row.ring.as_str(), "stable"] {
            if let Some(digest) = catalogue.pin(&runtime.name, ring) {
                let image = parse(&format!("{repository}@{digest}"), "pinned image")?;
                let source = ImageSource::Pinned { ring: ring.into() };
                return Ok((image, source, Some(runtime)));
            }
        }
    }
    let image = parse(&format!("{repository}:latest"), "runtime image")?;
    let source = if settings.local_override {
        ImageSource::LocalOnly
    } else {
        ImageSource::Tag
    };
    Ok((image, source, Some(runtime)))
}

fn parse(text: &str, what: &str) -> Result<ImageRef, InvalidSpec> {
    ImageRef::parse(text).map_err(|e| InvalidSpec::invalid(format!("{what}: {e}")))
}
