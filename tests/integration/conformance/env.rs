//! The shared state of a run (the suite's package-level variables) and its request helpers.

use std::path::PathBuf;

use crate::support::oci::*;
use crate::support::Server;

use super::data::SuiteData;
use super::runner::R;

pub(super) struct Env {
    pub(super) c: Client,
    /// `OCI_NAMESPACE`
    pub(super) name: String,
    /// `OCI_CROSSMOUNT_NAMESPACE`
    pub(super) cross: String,
    pub(super) d: SuiteData,
    pub(super) delete_manifest_before_blobs: bool,
    /// `OCI_AUTOMATIC_CROSSMOUNT`: None when unset (runAutomaticCrossmountTest = false).
    pub(super) automatic_crossmount: Option<bool>,
    pub(super) data_dir: PathBuf,
    // per-workflow variables of the Go closures
    pub(super) tag: String,
    pub(super) last: Option<Resp>,
    pub(super) prev: Option<Resp>,
    pub(super) second_chunk: Option<Resp>,
    pub(super) first_manifest_put: Option<Resp>,
    pub(super) empty_layer_manifest_ref: String,
    pub(super) num_tags: usize,
    pub(super) tag_list: Vec<String>,
    pub(super) tag_to_delete: String,
    pub(super) blob_delete_allowed: bool,
    pub(super) warnings: Vec<String>,
    /// The later v1.1.x `03_discovery_test.go` (Apache header, pushBlob/pushManifest helpers): tags
    /// `test<i>` AND `TEST<i>`, "... and be in sorted order", and a `last` check that re-reads the page.
    /// The default: the v1.1.0 file's `last` check reads its stale first page, so it cannot fail.
    pub(super) discovery_v111: bool,
}

impl Env {
    pub(super) fn new(server: &Server, delete_manifest_before_blobs: bool) -> Env {
        let name = std::env::var("OCI_NAMESPACE")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("conformance/{}", crate::support::unique("repo")));
        let cross = std::env::var("OCI_CROSSMOUNT_NAMESPACE")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("conformance-{}", uuid::Uuid::new_v4()));
        let automatic_crossmount = std::env::var("OCI_AUTOMATIC_CROSSMOUNT")
            .ok()
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "t" | "true"));
        Env {
            c: Client::new(&server.base_url()),
            name,
            cross,
            d: SuiteData::new(),
            delete_manifest_before_blobs,
            automatic_crossmount,
            data_dir: server.data_dir().to_path_buf(),
            tag: String::new(),
            last: None,
            prev: None,
            second_chunk: None,
            first_manifest_put: None,
            empty_layer_manifest_ref: String::new(),
            num_tags: 0,
            tag_list: vec![],
            tag_to_delete: String::new(),
            blob_delete_allowed: true,
            warnings: vec![],
            discovery_v111: true,
        }
    }

    /// The suite's `Warn(message)`.
    pub(super) fn warn(&mut self, msg: &str) {
        self.warnings.push(msg.to_string());
    }

    pub(super) fn p(&self, suffix: &str) -> String {
        format!("/v2/{}{}", self.name, suffix)
    }

    /// "Populate registry with test blob/layer": POST, then PUT `<location>?digest=` with the blob;
    /// expects 2xx.
    pub(super) fn populate_blob(&self, blob: &TestBlob) -> R {
        let post = self.c.start_upload(&self.name)?;
        let loc = post.location_rel();
        ensure!(
            !loc.is_empty(),
            "POST /v2/<name>/blobs/uploads/ returned no Location:\n  {}",
            post.describe()
        );
        let put = self.c.send(
            "PUT",
            &with_query(&self.c.url(&loc), "digest", &blob.digest),
            &[
                ("Content-Type", MT_OCTET),
                ("Content-Length", &blob.len_str()),
            ],
            Some(blob.content.clone()),
        )?;
        ensure_2xx!(put);
        Ok(())
    }

    pub(super) fn put_manifest(
        &self,
        reference: &str,
        content_type: &str,
        body: &TestBlob,
    ) -> Result<Resp, String> {
        self.c
            .put_manifest(&self.name, reference, content_type, &body.content)
    }

    pub(super) fn get_manifest_accept(
        &self,
        method: &str,
        reference: &str,
    ) -> Result<Resp, String> {
        self.c.send(
            method,
            &self.p(&format!("/manifests/{reference}")),
            &[("Accept", MT_OCI_MANIFEST)],
            None,
        )
    }
}
