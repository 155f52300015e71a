//! The researcher pages' data, as plain functions over the registry, the farm and the policy:
//! which repositories the caller sees (exactly the catalog's rule), their tags, an image's
//! platforms and layers, and its SIF's state now.

use std::sync::Arc;

use serde::Serialize;

use crate::auth::{Action, Principal};
use crate::farm::resolve::{Answer, SifService};
use crate::farm::sif_path::SifPath;
use crate::farm::status::JobStatus;
use crate::http::App;
use crate::meta::{self, TagDetail};
use crate::registry::error::{Error, Result};
use crate::registry::manifests::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::registry::names::{RepositoryName, Tag};

/// Most tags one repository page lists.
pub const MAX_TAGS: i64 = 500;

/// Repositories the caller sees, grouped as the home page shows them.
#[derive(Debug, Default)]
pub struct Listing {
    /// In the caller's own namespace.
    pub mine: Vec<String>,
    /// In the namespaces of the caller's groups.
    pub groups: Vec<String>,
    /// Everything else the caller may read (public namespaces; for admins, everyone's).
    pub others: Vec<String>,
}

impl Listing {
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.mine.iter().chain(&self.groups).chain(&self.others)
    }
}

/// Every repository `/v2/_catalog` shows `p`, all pages of it.
pub async fn visible_repositories(app: &Arc<App>, p: &Principal) -> Result<Vec<String>> {
    app.access.check(p, None, Action::Pull)?;
    let mut out = Vec::new();
    let mut last = None;
    loop {
        let (access, who) = (Arc::clone(&app.access), p.clone());
        let page = app
            .registry
            .catalog(last.clone(), None, move |r| access.may_list(&who, r))
            .await?;
        last = page.items.last().cloned();
        out.extend(page.items);
        if !page.more || last.is_none() {
            return Ok(out);
        }
    }
}

/// The caller's repositories, grouped (own, groups', others).
pub async fn listing(app: &Arc<App>, p: &Principal) -> Result<Listing> {
    let mut listing = Listing::default();
    for repo in visible_repositories(app, p).await? {
        let namespace = repo.split('/').next().unwrap_or("");
        if p.user.as_deref() == Some(namespace) {
            listing.mine.push(repo);
        } else if p.groups.iter().any(|m| m.group == namespace) {
            listing.groups.push(repo);
        } else {
            listing.others.push(repo);
        }
    }
    Ok(listing)
}

/// A repository name the caller may read; otherwise the same error as for one that does not
/// exist.
pub fn readable_repository(app: &App, p: &Principal, raw: &str) -> Result<RepositoryName> {
    let repo = RepositoryName::parse(raw)?;
    if !app.access.readable(p, &repo)? {
        return Err(unknown_repository(&repo));
    }
    Ok(repo)
}

fn unknown_repository(repo: &RepositoryName) -> Error {
    Error::NameUnknown(format!("repository {repo} is not known to this registry"))
}

/// What the UI says about one manifest: its kind, size, platforms and layers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManifestSummary {
    pub kind: &'static str,
    /// Config plus layers (an image), or the index itself.
    pub size: i64,
    /// `os/arch[/variant]` of an index's children.
    pub platforms: Vec<String>,
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// Reads a manifest's JSON (already validated at push) for the page.
pub fn summarize(media_type: &str, content: &[u8]) -> ManifestSummary {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
        return ManifestSummary {
            kind: "unreadable",
            ..ManifestSummary::default()
        };
    };
    let size_of = |d: &serde_json::Value| d.get("size").and_then(|s| s.as_i64()).unwrap_or(0);
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
        let children = v.get("manifests").and_then(|m| m.as_array());
        let platforms = children
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("platform"))
            .map(|p| {
                let part = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("");
                let mut s = format!("{}/{}", part("os"), part("architecture"));
                if !part("variant").is_empty() {
                    s.push('/');
                    s.push_str(part("variant"));
                }
                s
            })
            .collect();
        return ManifestSummary {
            kind: "index",
            size: content.len() as i64,
            platforms,
            layers: Vec::new(),
        };
    }
    let layers: Vec<Layer> = v
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .map(|l| Layer {
            media_type: l
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_owned(),
            digest: l
                .get("digest")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_owned(),
            size: size_of(l),
        })
        .collect();
    let config = v.get("config").map(size_of).unwrap_or(0);
    ManifestSummary {
        kind: if layers.is_empty() {
            "artifact"
        } else {
            "image"
        },
        size: config + layers.iter().map(|l| l.size).sum::<i64>(),
        platforms: Vec::new(),
        layers,
    }
}

/// A repository's tags with their manifests; `NAME_UNKNOWN` when the caller may not read it
/// or it does not exist (the same answer).
pub async fn repository_tags(
    app: &Arc<App>,
    p: &Principal,
    raw: &str,
) -> Result<(RepositoryName, Vec<TagDetail>)> {
    let repo = readable_repository(app, p, raw)?;
    let name = repo.as_str().to_owned();
    let tags = app
        .registry
        .db
        .read(move |c| meta::repository_tags(c, &name, MAX_TAGS))
        .await?
        .ok_or_else(|| unknown_repository(&repo))?;
    Ok((repo, tags))
}

/// An image page's reference: `<repository>:<tag>`.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub repo: RepositoryName,
    pub tag: Tag,
}

impl ImageRef {
    pub fn parse(raw: &str) -> Result<ImageRef> {
        let (name, tag) = raw
            .rsplit_once(':')
            .ok_or_else(|| Error::NameInvalid(format!("{raw:?} is not <repository>:<tag>")))?;
        Ok(ImageRef {
            repo: RepositoryName::parse(name)?,
            tag: Tag::parse(tag)?,
        })
    }

    pub fn text(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }
}

/// The SIF's state as the image page shows it (and the live JSON answers).
#[derive(Debug, Clone, Serialize)]
pub struct SifState {
    /// `queued`, `building`, `ready`, `failed`, `none` (no SIF for this manifest: an artifact,
    /// a platform that is not built), or `unknown` (no such image, or not readable).
    pub state: String,
    pub status: Option<JobStatus>,
    /// A ready SIF's size in bytes.
    pub sif_size: Option<i64>,
    /// A failed build's log (its end).
    pub log_tail: Option<String>,
    /// Why there is no SIF (an artifact, a platform that is not built).
    pub reason: Option<String>,
}

/// Bytes of build log shown for a failed build.
const LOG_TAIL: usize = 8192;

/// The SIF state of `image` for `p` (queued with position, building with progress, ready with
/// size and digest, failed with reason and log), answered as `/sif/<ref>/status` would.
pub async fn sif_state(app: &Arc<App>, p: &Principal, image: &ImageRef) -> Result<SifState> {
    sif_state_of(app, p, &image.text()).await
}

/// [`sif_state`] of any `/sif` reference (`<repository>:<tag>` or a digest). What `p` may not
/// read is `unknown`, exactly like what does not exist.
pub async fn sif_state_of(app: &Arc<App>, p: &Principal, reference: &str) -> Result<SifState> {
    let service = SifService {
        farm: &app.farm,
        access: &app.access,
        registry: &app.registry,
    };
    let without = |state: &str, reason: String| SifState {
        state: state.into(),
        status: None,
        sif_size: None,
        log_tail: None,
        reason: Some(reason),
    };
    let status_path = format!("{reference}/status");
    let status = match service.answer(p, SifPath::parse(&status_path), None).await {
        Ok(Answer::Status(s)) => s,
        Ok(_) => return Err(Error::Internal("status request answered otherwise".into())),
        Err(e @ (Error::ManifestInvalid(_) | Error::ManifestBlobUnknown(_))) => {
            return Ok(without("none", e.to_string()))
        }
        Err(
            Error::ManifestUnknown(_)
            | Error::NameUnknown(_)
            | Error::NameInvalid(_)
            | Error::TagInvalid(_)
            | Error::DigestInvalid(_),
        ) => {
            return Ok(without(
                "unknown",
                format!("{reference} is not an image this registry holds (or you may not read it)"),
            ))
        }
        Err(e) => return Err(e),
    };
    let mut state = SifState {
        state: status.state.to_owned(),
        sif_size: None,
        log_tail: None,
        reason: None,
        status: Some(status.clone()),
    };
    if let Some(sif) = status.sif.clone() {
        state.sif_size = app
            .registry
            .db
            .read(move |c| meta::sif_by_digest(c, &sif))
            .await?
            .map(|s| s.size);
    }
    if status.state == "failed" {
        let log_path = format!("{reference}/log");
        if let Ok(Answer::Log(log)) = service.answer(p, SifPath::parse(&log_path), None).await {
            let mut start = log.len().saturating_sub(LOG_TAIL);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            state.log_tail = Some(log[start..].to_owned());
        }
    }
    Ok(state)
}

/// Everything the image page shows.
pub struct ImagePage {
    pub image: ImageRef,
    pub digest: String,
    pub media_type: String,
    pub pushed_at: i64,
    pub summary: ManifestSummary,
    pub sif: SifState,
}

/// The image page of `raw` (`<repository>:<tag>`) for `p`; unreadable and missing images get
/// the same `NAME_UNKNOWN`/`MANIFEST_UNKNOWN` errors.
pub async fn image_page(app: &Arc<App>, p: &Principal, raw: &str) -> Result<ImagePage> {
    let image = ImageRef::parse(raw)?;
    readable_repository(app, p, image.repo.as_str())?;
    let (r, t) = (
        image.repo.as_str().to_owned(),
        image.tag.as_str().to_owned(),
    );
    let tags = app
        .registry
        .db
        .read(move |c| meta::repository_tags(c, &r, MAX_TAGS))
        .await?
        .ok_or_else(|| unknown_repository(&image.repo))?;
    let tag = tags.into_iter().find(|d| d.tag == t).ok_or_else(|| {
        Error::ManifestUnknown(format!(
            "{} is not an image this registry holds",
            image.text()
        ))
    })?;
    let sif = sif_state(app, p, &image).await?;
    let mut summary = summarize(&tag.media_type, &tag.content);
    if summary.platforms.is_empty() {
        if let Some(s) = &sif.status {
            summary.platforms.push(s.platform.clone());
        }
    }
    Ok(ImagePage {
        digest: tag.digest,
        media_type: tag.media_type,
        pushed_at: tag.pushed_at,
        summary,
        sif,
        image,
    })
}

/// The three ways into an image that the project documents (README, deploy/pyxis).
pub struct CopyLines {
    pub run: String,
    pub apptainer: String,
    pub pyxis: String,
}

pub fn copy_lines(host: &str, image: &ImageRef) -> CopyLines {
    let r = image.text();
    CopyLines {
        run: format!("hpc-registry run {r}"),
        apptainer: format!("apptainer pull oras://{host}/{r}.sif"),
        pyxis: format!("srun --container-image={r}"),
    }
}
