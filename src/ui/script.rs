//! `/ui/script`: the submit-script generator. The image list is what the caller may read (with
//! each image's SIF readiness), the templates are the site's (`[[ui.templates]]`), the script
//! is `jobscript::generate`'s, shown read-only and downloadable.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::guard::{Posted, Viewer};
use super::{data, views};
use crate::auth::Principal;
use crate::http::App;
use crate::jobscript::{self, FastStorage, MailOn, ScriptRequest};
use crate::meta;
use crate::registry::error::Result;

/// Most images the generator lists.
const MAX_IMAGES: usize = 500;

/// An image the caller may choose, with its SIF's state.
#[derive(Debug, Clone)]
pub struct Choice {
    /// `<repository>:<tag>`
    pub reference: String,
    /// `ready`, `queued`, `building`, `failed`, or `not built yet`.
    pub sif: String,
}

/// Every `<repository>:<tag>` the caller may read, with the state of its SIF (read from the
/// build table; nothing is queued by looking).
pub async fn choices(app: &Arc<App>, p: &Principal) -> Result<Vec<Choice>> {
    let repos = data::visible_repositories(app, p).await?;
    let out = app
        .registry
        .db
        .read(move |c| {
            let mut out = Vec::new();
            for repo in repos {
                let Some(tags) = meta::repository_tags(c, &repo, data::MAX_TAGS)? else {
                    continue;
                };
                for t in tags {
                    let summary = data::summarize(&t.media_type, &t.content);
                    if summary.kind == "artifact" {
                        continue;
                    }
                    let sif = meta::jobs_for_manifest(c, &t.digest)?
                        .first()
                        .map(|j| j.state.as_str().to_owned())
                        .unwrap_or_else(|| "not built yet".to_owned());
                    out.push(Choice {
                        reference: format!("{repo}:{}", t.tag),
                        sif,
                    });
                    if out.len() >= MAX_IMAGES {
                        return Ok(out);
                    }
                }
            }
            Ok(out)
        })
        .await?;
    Ok(out)
}

/// The form as the caller filled it (also what the page shows back).
#[derive(Debug, Clone, Default)]
pub struct Filled {
    pub image: String,
    pub template: String,
    pub gpus: String,
    pub fast_storage: bool,
    pub fast_inputs: String,
    pub fast_results: String,
    pub binds: String,
    pub mail_address: String,
    pub mail_end: bool,
    pub mail_fail: bool,
    pub array: String,
    pub job_name: String,
    pub command: String,
}

fn list(s: &str) -> Vec<String> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Filled {
    fn of(p: &Posted) -> Filled {
        let f = |k: &str| p.field(k).to_owned();
        let on = |k: &str| !p.field(k).is_empty();
        Filled {
            image: f("image"),
            template: f("template"),
            gpus: f("gpus"),
            fast_storage: on("fast_storage"),
            fast_inputs: f("fast_inputs"),
            fast_results: f("fast_results"),
            binds: f("binds"),
            mail_address: f("mail_address"),
            mail_end: on("mail_end"),
            mail_fail: on("mail_fail"),
            array: f("array"),
            job_name: f("job_name"),
            command: f("command"),
        }
    }

    /// The generator's request; `Err` names the field that is wrong.
    fn request(&self) -> std::result::Result<ScriptRequest, String> {
        let gpus = match self.gpus.trim() {
            "" => 0,
            g => g
                .parse::<u32>()
                .map_err(|_| format!("GPUs: {g:?} is not a number"))?,
        };
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(ScriptRequest {
            image: self.image.clone(),
            template: self.template.clone(),
            gpus,
            fast_storage: self.fast_storage.then(|| FastStorage {
                inputs: list(&self.fast_inputs),
                results: list(&self.fast_results),
            }),
            binds: list(&self.binds),
            mail: text(&self.mail_address).map(|address| MailOn {
                address,
                on_end: self.mail_end,
                on_fail: self.mail_fail,
            }),
            array: text(&self.array),
            job_name: text(&self.job_name),
            command: self.command.trim().to_owned(),
        })
    }
}

async fn render(
    app: &Arc<App>,
    viewer: &Viewer,
    status: StatusCode,
    filled: &Filled,
    script: Option<&str>,
    error: Option<&str>,
) -> Response {
    match choices(app, &viewer.principal).await {
        Ok(images) => views::respond(
            status,
            views::script::generator(
                &viewer.nav(),
                &images,
                &app.templates.current(),
                filled,
                script,
                error,
            ),
        ),
        Err(e) => super::pages::fail(e),
    }
}

/// `GET /ui/script[?image=REF]`: the form.
pub async fn page(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> Response {
    let image = crate::http::auth::query_map(&uri)
        .ok()
        .and_then(|mut q| q.remove("image"))
        .unwrap_or_default();
    let filled = Filled {
        image,
        template: "small".into(),
        gpus: "0".into(),
        mail_end: true,
        mail_fail: true,
        ..Filled::default()
    };
    render(&app, &viewer, StatusCode::OK, &filled, None, None).await
}

/// `POST /ui/script`: generates the script (`action=generate`) or sends it as a download
/// (`action=download`).
pub async fn generate(State(app): State<Arc<App>>, posted: Posted) -> Response {
    let filled = Filled::of(&posted);
    let viewer = &posted.viewer;
    // Only an image the caller may read: anything else is the same "unknown" as a typo.
    let readable = match choices(&app, &viewer.principal).await {
        Ok(images) => images.iter().any(|c| c.reference == filled.image),
        Err(e) => return super::pages::fail(e),
    };
    if !readable {
        let e = format!(
            "{:?} is not an image this registry holds (or you may not read it)",
            filled.image
        );
        return render(&app, viewer, StatusCode::NOT_FOUND, &filled, None, Some(&e)).await;
    }
    // A form that does not make a request and a request no template can serve both send the
    // researcher back to the form with the reason.
    let generated = filled.request().and_then(|request| {
        let script =
            jobscript::generate(&request, &app.templates.current()).map_err(|e| e.to_string())?;
        Ok((request, script))
    });
    let (request, script) = match generated {
        Ok(generated) => generated,
        Err(e) => {
            let status = StatusCode::BAD_REQUEST;
            return render(&app, viewer, status, &filled, None, Some(&e)).await;
        }
    };
    if posted.field("action") == "download" {
        return download(&script, request.job_name.as_deref());
    }
    render(&app, viewer, StatusCode::OK, &filled, Some(&script), None).await
}

/// The script as a file download named after the job.
fn download(script: &str, job_name: Option<&str>) -> Response {
    let stem: String = job_name
        .unwrap_or("job")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    let stem = if stem.is_empty() { "job".into() } else { stem };
    let mut r = script.to_owned().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{stem}.sbatch\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
