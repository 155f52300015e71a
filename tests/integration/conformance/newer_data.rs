//! The newer suite's data sets (testdata.go / run.go GenerateData): images, indexes, nested indexes,
//! artifacts, subjects, a missing subject, data fields, custom fields, no layers, a ~3.9 MB
//! manifest, sha512 manifests, non-distributable layers.

use std::collections::BTreeMap;

use crate::support::oci::*;

use super::newer_blob_apis::Algo;

/// A referrer the newer suite expects for a subject (run.go TestReferrers).
#[derive(Clone, Debug)]
pub(super) struct RefGoal {
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) size: usize,
    pub(super) artifact_type: String,
    pub(super) annotations: BTreeMap<String, String>,
}

/// One data set of the newer suite (testdata.go `testData`).
#[derive(Default)]
pub(super) struct Td {
    pub(super) algo: Option<Algo>,
    pub(super) blobs: Vec<TestBlob>,
    /// push order: children before parents
    pub(super) manifests: Vec<(TestBlob, String)>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) referrers: Vec<(String, Vec<RefGoal>)>,
}

#[derive(Clone, Default)]
pub(super) struct Gen {
    pub(super) layers: Option<usize>,
    pub(super) layer_mt: Option<String>,
    pub(super) layer_bytes: Option<Vec<u8>>,
    pub(super) config_mt: Option<String>,
    pub(super) config_bytes: Option<Vec<u8>>,
    pub(super) artifact_type: Option<String>,
    pub(super) subject: Option<serde_json::Value>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) annotation_uniq: bool,
    pub(super) platform: Option<(String, String)>,
    pub(super) data_field: bool,
    pub(super) extra_field: bool,
    pub(super) tag: Option<String>,
    pub(super) large_annotations: bool,
}

impl Td {
    pub(super) fn algo(&self) -> Algo {
        self.algo.unwrap_or(Algo::Sha256)
    }

    pub(super) fn add_blob(&mut self, b: Vec<u8>) -> TestBlob {
        let blob = self.algo().blob(b);
        if !self.blobs.iter().any(|x| x.digest == blob.digest) {
            self.blobs.push(blob.clone());
        }
        blob
    }

    pub(super) fn desc(mt: &str, b: &TestBlob, data: bool) -> serde_json::Value {
        let mut d = serde_json::json!({"mediaType": mt, "digest": b.digest, "size": b.len()});
        if data {
            d["data"] = serde_json::Value::String(b64(&b.content));
        }
        d
    }

    pub(super) fn add_manifest(
        &mut self,
        body: Vec<u8>,
        mt: &str,
        g: &Gen,
    ) -> (TestBlob, serde_json::Value) {
        let m = self.algo().blob(body);
        self.manifests.push((m.clone(), mt.to_string()));
        if let Some(t) = &g.tag {
            self.tags.push((t.clone(), m.digest.clone()));
        }
        let mut d = serde_json::json!({"mediaType": mt, "digest": m.digest, "size": m.len()});
        if let Some((os, arch)) = &g.platform {
            d["platform"] = serde_json::json!({"os": os, "architecture": arch});
        }
        (m, d)
    }

    /// genManifestFull: config + layers + manifest.
    pub(super) fn gen_image(&mut self, g: &Gen) -> (TestBlob, serde_json::Value) {
        let (os, arch) = g
            .platform
            .clone()
            .unwrap_or(("linux".into(), "amd64".into()));
        let config_bytes = g.config_bytes.clone().unwrap_or_else(|| {
            let mut cfg = serde_json::json!({
                "architecture": arch, "os": os, "author": random_string(16),
                "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Env": ["PATH=/bin"]}
            });
            if g.extra_field {
                cfg[format!("x-conformance-{}", random_string(8))] =
                    serde_json::json!(random_string(12));
            }
            serde_json::to_vec(&cfg).unwrap()
        });
        let config = self.add_blob(config_bytes);
        let config_mt = g
            .config_mt
            .clone()
            .unwrap_or_else(|| MT_OCI_CONFIG.to_string());
        let layer_mt = g
            .layer_mt
            .clone()
            .unwrap_or_else(|| MT_OCI_LAYER_GZIP.to_string());
        let mut layers = vec![];
        for _ in 0..g.layers.unwrap_or(2) {
            let lb = g
                .layer_bytes
                .clone()
                .unwrap_or_else(|| random_bytes(1024 + (random_bytes(1)[0] as usize)));
            let l = self.add_blob(lb);
            let mut d = Td::desc(&layer_mt, &l, g.data_field);
            if g.extra_field {
                d[format!("x-conformance-{}", random_string(8))] =
                    serde_json::json!(random_string(12));
            }
            layers.push(d);
        }
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": Td::desc(&config_mt, &config, g.data_field),
            "layers": layers,
        });
        if let Some(at) = &g.artifact_type {
            m["artifactType"] = serde_json::json!(at);
        }
        if let Some(s) = &g.subject {
            m["subject"] = s.clone();
        }
        let mut ann = g.annotations.clone();
        if g.annotation_uniq {
            ann.insert(
                "org.opencontainers.conformance.uniq".into(),
                random_string(16),
            );
        }
        if g.large_annotations {
            for i in 0..390 {
                ann.insert(format!("large-annotation-{i}"), "A".repeat(10000));
            }
        }
        if !ann.is_empty() {
            m["annotations"] = serde_json::to_value(&ann).unwrap();
        }
        if g.extra_field {
            m[format!("x-conformance-{}", random_string(8))] =
                serde_json::json!({"nested": random_string(12)});
        }
        let body = serde_json::to_vec_pretty(&m).unwrap();
        let (mb, d) = self.add_manifest(body, MT_OCI_MANIFEST, g);
        if let Some(s) = &g.subject {
            let at = g.artifact_type.clone().unwrap_or(config_mt);
            self.add_referrer(
                s,
                RefGoal {
                    digest: mb.digest.clone(),
                    media_type: MT_OCI_MANIFEST.into(),
                    size: mb.len(),
                    artifact_type: at,
                    annotations: ann,
                },
            );
        }
        (mb, d)
    }

    /// genIndexFull: an image per platform, then the index.
    pub(super) fn gen_index(
        &mut self,
        g: &Gen,
        platforms: &[(&str, &str)],
    ) -> (TestBlob, serde_json::Value) {
        let mut children = vec![];
        for (os, arch) in platforms {
            let child = Gen {
                platform: Some((os.to_string(), arch.to_string())),
                tag: None,
                subject: None,
                annotations: BTreeMap::new(),
                annotation_uniq: false,
                ..g.clone()
            };
            children.push(self.gen_image(&child).1);
        }
        self.gen_index_of(g, children)
    }

    pub(super) fn gen_index_of(
        &mut self,
        g: &Gen,
        children: Vec<serde_json::Value>,
    ) -> (TestBlob, serde_json::Value) {
        let mut idx = serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": children});
        if let Some(at) = &g.artifact_type {
            idx["artifactType"] = serde_json::json!(at);
        }
        if let Some(s) = &g.subject {
            idx["subject"] = s.clone();
        }
        let mut ann = g.annotations.clone();
        if g.annotation_uniq {
            ann.insert(
                "org.opencontainers.conformance.uniq".into(),
                random_string(16),
            );
        }
        if !ann.is_empty() {
            idx["annotations"] = serde_json::to_value(&ann).unwrap();
        }
        if g.extra_field {
            idx[format!("x-conformance-{}", random_string(8))] =
                serde_json::json!(random_string(12));
        }
        let body = serde_json::to_vec_pretty(&idx).unwrap();
        let g2 = Gen {
            platform: None,
            ..g.clone()
        };
        let (mb, d) = self.add_manifest(body, MT_OCI_INDEX, &g2);
        if let Some(s) = &g.subject {
            let at = g.artifact_type.clone().unwrap_or_default();
            self.add_referrer(
                s,
                RefGoal {
                    digest: mb.digest.clone(),
                    media_type: MT_OCI_INDEX.into(),
                    size: mb.len(),
                    artifact_type: at,
                    annotations: ann,
                },
            );
        }
        (mb, d)
    }

    pub(super) fn add_referrer(&mut self, subject: &serde_json::Value, goal: RefGoal) {
        let sd = subject
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        match self.referrers.iter_mut().find(|(s, _)| *s == sd) {
            Some((_, v)) => v.push(goal),
            None => self.referrers.push((sd, vec![goal])),
        }
    }
}

pub(super) fn artifact_gen(at: &str, layer_mt: &str) -> Gen {
    Gen {
        artifact_type: Some(at.into()),
        config_mt: Some(MT_OCI_EMPTY.into()),
        config_bytes: Some(b"{}".to_vec()),
        layers: Some(1),
        layer_mt: Some(layer_mt.into()),
        ..Default::default()
    }
}

pub(super) const MT_EXAMPLE_CONF1: &str = "application/vnd.example.oci.conformance.conf1";
pub(super) const MT_EXAMPLE_CONF2: &str = "application/vnd.example.oci.conformance.conf2";

/// run.go GenerateData, except "bad-digest-image" (in bad_input.rs) and the 1.1+dev tag-param sets.
pub(super) fn newer_suite_data() -> Vec<(&'static str, Td, bool)> {
    let mut sets: Vec<(&'static str, Td, bool)> = vec![];
    let tagged = |t: &str| Gen {
        tag: Some(t.into()),
        ..Default::default()
    };
    let conformance_ann = || {
        BTreeMap::from([(
            "org.opencontainers.conformance".to_string(),
            "hello conformance test".to_string(),
        )])
    };

    let mut td = Td::default();
    td.gen_image(&tagged("image"));
    sets.push(("Image", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        layer_mt: Some(MT_OCI_LAYER_TAR.into()),
        ..tagged("image-uncompressed")
    });
    sets.push(("Image Uncompressed", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        large_annotations: true,
        ..tagged("large-manifest")
    });
    sets.push(("Image with Large Manifest", td, false));

    let mut td = Td::default();
    td.gen_index(&tagged("index"), &[("linux", "amd64"), ("linux", "arm64")]);
    sets.push(("Index", td, false));

    let mut td = Td::default();
    let (_, d1) = td.gen_index(&Gen::default(), &[("linux", "amd64"), ("linux", "arm64")]);
    let (_, d2) = td.gen_index(&Gen::default(), &[("linux", "amd64"), ("linux", "arm64")]);
    td.gen_index_of(&tagged("index-of-index"), vec![d1, d2]);
    sets.push(("Nested Index", td, false));

    let mut td = Td::default();
    td.gen_index_of(&tagged("index"), vec![]);
    sets.push(("Empty Index", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        tag: Some("artifact".into()),
        ..artifact_gen(MT_EXAMPLE_CONF1, MT_EXAMPLE_CONF1)
    });
    sets.push(("Artifact", td, false));

    let mut td = Td::default();
    td.gen_index(
        &Gen {
            tag: Some("artifact-index".into()),
            ..artifact_gen(MT_EXAMPLE_CONF1, MT_EXAMPLE_CONF1)
        },
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    sets.push(("Artifact Index", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        tag: Some("artifact-without-layers".into()),
        layer_bytes: Some(b"{}".to_vec()),
        ..artifact_gen(MT_EXAMPLE_CONF1, MT_OCI_EMPTY)
    });
    sets.push(("Artifact without Layers", td, false));

    let mut td = Td::default();
    let (_, subj) = td.gen_image(&tagged("image"));
    td.gen_image(&Gen {
        subject: Some(subj.clone()),
        ..Default::default()
    });
    td.gen_image(&Gen {
        annotations: conformance_ann(),
        annotation_uniq: true,
        subject: Some(subj.clone()),
        tag: Some("tagged-artifact1".into()),
        ..artifact_gen(MT_EXAMPLE_CONF1, MT_EXAMPLE_CONF1)
    });
    td.gen_image(&Gen {
        annotations: conformance_ann(),
        annotation_uniq: true,
        subject: Some(subj),
        tag: Some("tagged-artifact2".into()),
        ..artifact_gen(MT_EXAMPLE_CONF2, MT_OCTET)
    });
    sets.push(("Artifacts with Subject", td, false));

    let mut td = Td::default();
    let (_, subj) = td.gen_index(&tagged("index"), &[("linux", "amd64"), ("linux", "arm64")]);
    td.gen_index(
        &Gen {
            annotations: conformance_ann(),
            annotation_uniq: true,
            subject: Some(subj),
            tag: Some("tagged-artifact".into()),
            ..artifact_gen(MT_EXAMPLE_CONF1, MT_EXAMPLE_CONF1)
        },
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    sets.push(("Index with Subject", td, false));

    let mut td = Td::default();
    let missing = serde_json::json!({"mediaType": MT_OCI_MANIFEST, "size": 123, "digest": sha256_of(b"missing content")});
    td.gen_image(&Gen {
        annotations: conformance_ann(),
        annotation_uniq: true,
        subject: Some(missing),
        tag: Some("tagged-artifact".into()),
        ..artifact_gen(MT_EXAMPLE_CONF1, MT_EXAMPLE_CONF1)
    });
    sets.push(("Missing Subject", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        data_field: true,
        ..tagged("data-field")
    });
    sets.push(("Data Field", td, false));

    let mut td = Td::default();
    td.gen_index(
        &Gen {
            extra_field: true,
            ..tagged("custom-fields")
        },
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    sets.push(("Custom Fields", td, false));

    let mut td = Td::default();
    td.gen_image(&Gen {
        layers: Some(0),
        ..tagged("no-layers")
    });
    sets.push(("No Layers", td, false));

    let mut td = Td {
        algo: Some(Algo::Sha512),
        ..Default::default()
    };
    td.gen_index(&Gen::default(), &[("linux", "amd64"), ("linux", "arm64")]);
    sets.push(("Digest Algorithm sha512", td, false));

    // Non-distributable layers (deprecated in image-spec 1.1): the layer blobs are never pushed.
    let mut td = Td::default();
    let layer = td.add_blob(random_bytes(700));
    let nd1 = sha256_of(&random_bytes(256));
    let nd2 = sha256_of(&random_bytes(256));
    let cfg = td.add_blob(serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [nd1, nd2, layer.digest]}})).unwrap());
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": Td::desc(MT_OCI_CONFIG, &cfg, false),
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": nd1, "size": 123456,
             "urls": [format!("https://store.example.com/blobs/sha256/{}", &nd1[7..])]},
            {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": nd2, "size": 12345,
             "urls": [format!("https://store.example.com/blobs/sha256/{}", &nd2[7..])]},
            Td::desc(MT_OCI_LAYER_GZIP, &layer, false)
        ]
    });
    td.add_manifest(
        serde_json::to_vec_pretty(&m).unwrap(),
        MT_OCI_MANIFEST,
        &tagged("non-distributable-image"),
    );
    sets.push(("Non-distributable Layers", td, true));

    sets
}
