//! `/ui/lint`: paste (or load from a file) a batch script and get its findings by line. The
//! images it names are resolved here with the caller's permissions (an image they may not read
//! is `Unknown`, exactly like one that does not exist), then `jobscript::lint` checks it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::guard::{Posted, Viewer};
use super::{data, views};
use crate::auth::Principal;
use crate::http::App;
use crate::jobscript::{self, ImageState};
use crate::registry::error::Result;

/// Most distinct images one script may name that are looked up.
const MAX_IMAGES: usize = 50;

/// The state of each image `script` names, as the caller may see it.
pub async fn image_states(
    app: &Arc<App>,
    p: &Principal,
    script: &str,
) -> Result<HashMap<String, ImageState>> {
    let mut states = HashMap::new();
    for (_, reference) in jobscript::image_references(script) {
        if states.contains_key(&reference) || states.len() >= MAX_IMAGES {
            continue;
        }
        let s = data::sif_state_of(app, p, &reference).await?;
        let state = match s.state.as_str() {
            "ready" => ImageState::Ready {
                digest: s.status.and_then(|st| st.sif).unwrap_or_default(),
            },
            "queued" => ImageState::Queued,
            "building" => ImageState::Building,
            "failed" => ImageState::Failed {
                reason: s
                    .status
                    .and_then(|st| st.failure)
                    .unwrap_or_else(|| "unknown reason".into()),
            },
            "none" => ImageState::NotRunnable,
            _ => ImageState::Unknown,
        };
        states.insert(reference, state);
    }
    Ok(states)
}

/// `GET /ui/lint`.
pub async fn page(viewer: Viewer) -> Response {
    views::respond(
        StatusCode::OK,
        views::lint::lint(&viewer.nav(), "", None, None),
    )
}

/// `POST /ui/lint`: `script`.
pub async fn check(State(app): State<Arc<App>>, posted: Posted) -> Response {
    let script = posted.field("script").replace("\r\n", "\n");
    let viewer = &posted.viewer;
    let states = match image_states(&app, &viewer.principal, &script).await {
        Ok(s) => s,
        Err(e) => return super::pages::fail(e),
    };
    let findings = jobscript::lint(&script, &states);
    // Slurm's own opinion where sbatch is installed here (nothing is queued).
    let copy = script.clone();
    let slurm = tokio::task::spawn_blocking(move || jobscript::sbatch_test_only(&copy, &[]))
        .await
        .ok()
        .and_then(|r| match r {
            Ok(Some(t)) => Some(format!(
                "{}: {}",
                if t.accepted { "accepted" } else { "refused" },
                t.message
            )),
            Ok(None) => None,
            Err(e) => Some(format!("sbatch could not be run: {e}")),
        });
    views::respond(
        StatusCode::OK,
        views::lint::lint(&viewer.nav(), &script, Some(&findings), slurm.as_deref()),
    )
}
