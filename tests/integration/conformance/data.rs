//! The suite's data (setup.go `init()`): random configs and blobs, the fixed gzip layer, and the
//! referrer artifacts with their subjects.

use std::collections::{BTreeMap, HashMap};

use crate::support::oci::*;

/// `layerBase64String`: a tiny tar.gz with test.txt ("you bothered to find out what was in here...").
pub(super) const LAYER_BASE64: &str = "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0\
WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD\
jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA";

pub(super) const TEST_TAG_NAME: &str = "tagtest0";
pub(super) const EMPTY_LAYER_TEST_TAG: &str = "emptylayer";
pub(super) const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";
pub(super) const INVALID_MANIFEST_CONTENT: &[u8] = b"blablabla";
pub(super) const TEST_ANNOTATION_KEY: &str = "org.opencontainers.conformance.test";
pub(super) const ART_TYPE_A: &str = "application/vnd.nhl.peanut.butter.bagel";
pub(super) const ART_TYPE_B: &str = "application/vnd.nba.strawberry.jam.croissant";
pub(super) const ART_TYPE_INDEX: &str = "application/vnd.food.stand";
pub(super) const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// One referrer the suite expects in a referrers index (for the [extra] descriptor checks).
#[derive(Clone, Debug)]
pub(super) struct ExpectedReferrer {
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) size: usize,
    pub(super) artifact_type: String,
}

pub(super) struct SuiteData {
    pub(super) configs: Vec<TestBlob>,
    pub(super) manifests: Vec<TestBlob>,
    pub(super) layer: TestBlob,
    pub(super) empty_layer_manifest: TestBlob,
    pub(super) blob_a: TestBlob,
    pub(super) blob_b: TestBlob,
    pub(super) blob_b_chunk1: Vec<u8>,
    pub(super) blob_b_chunk2: Vec<u8>,
    pub(super) blob_b_chunk1_range: String,
    pub(super) blob_b_chunk2_range: String,
    pub(super) empty_json: TestBlob,
    pub(super) ref_blob_a: TestBlob,
    pub(super) ref_blob_b: TestBlob,
    pub(super) refs_a_config: TestBlob,
    pub(super) refs_b_config: TestBlob,
    pub(super) refs_a_layer: TestBlob,
    pub(super) refs_b_layer: TestBlob,
    pub(super) refs_c_layer: TestBlob,
    pub(super) refs_index: TestBlob,
    pub(super) annotation_values: HashMap<String, String>,
    pub(super) referrers_of_m4: Vec<ExpectedReferrer>,
    pub(super) dummy_digest: String,
}

impl SuiteData {
    pub(super) fn new() -> SuiteData {
        use base64::Engine as _;
        // numWorkflows is (1<<4) in setup.go; the suite uses indexes 0..=4.
        let configs: Vec<TestBlob> = (0..5).map(|_| random_config()).collect();
        let layer = TestBlob::new(
            base64::engine::general_purpose::STANDARD
                .decode(LAYER_BASE64)
                .expect("layerBase64String decodes"),
        );
        let layers = vec![GoDescriptor::of(MT_OCI_LAYER_GZIP, &layer)];
        let manifests: Vec<TestBlob> = configs
            .iter()
            .map(|cfg| {
                let m = GoManifest {
                    schema_version: 2,
                    media_type: MT_OCI_MANIFEST.into(),
                    config: GoDescriptor {
                        data: Some(b64(&cfg.content)), // must be the config content
                        new_unspecified_field: Some(b64(b"hello world")), // content doesn't matter
                        ..GoDescriptor::of(MT_OCI_CONFIG, cfg)
                    },
                    layers: layers.clone(),
                    ..Default::default()
                };
                TestBlob::new(go_json(&m))
            })
            .collect();
        // used in push test: no mediaType field, no layers
        let empty_layer_manifest = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            config: GoDescriptor {
                data: Some(b64(&configs[1].content)),
                new_unspecified_field: Some(b64(b"hello world")),
                ..GoDescriptor::of(MT_OCI_CONFIG, &configs[1])
            },
            layers: vec![],
            ..Default::default()
        }));

        let blob_a = TestBlob::new(random_bytes(42));
        let (blob_b, c1, c2, r1, r2) = chunked_blob(42);

        let empty_json = TestBlob::new(b"{}".to_vec());
        let empty_desc = GoDescriptor::of(MT_OCI_EMPTY, &empty_json);
        let ref_blob_a = TestBlob::new(b"NHL Peanut Butter on my NHL bagel".to_vec());
        let ref_blob_b = TestBlob::new(b"NBA Strawberry Jam on my NBA croissant".to_vec());
        let subject4 = GoDescriptor::of(MT_OCI_MANIFEST, &manifests[4]);
        let subject3 = GoDescriptor::of(MT_OCI_MANIFEST, &manifests[3]);
        let ann = |v: &str| BTreeMap::from([(TEST_ANNOTATION_KEY.to_string(), v.to_string())]);

        // artifact with Subject ref using config.MediaType = artifactType
        let refs_a_config = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            media_type: MT_OCI_MANIFEST.into(),
            config: GoDescriptor::of(ART_TYPE_A, &ref_blob_a),
            subject: Some(subject4.clone()),
            layers: vec![empty_desc.clone()],
            annotations: ann("test config a"),
            ..Default::default()
        }));
        let refs_b_config = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            media_type: MT_OCI_MANIFEST.into(),
            config: GoDescriptor::of(ART_TYPE_B, &ref_blob_b),
            subject: Some(subject4.clone()),
            layers: vec![empty_desc.clone()],
            annotations: ann("test config b"),
            ..Default::default()
        }));
        // artifact with Subject ref using ArtifactType, config.MediaType = emptyJSON
        let refs_a_layer = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            media_type: MT_OCI_MANIFEST.into(),
            artifact_type: ART_TYPE_A.into(),
            config: empty_desc.clone(),
            subject: Some(subject4.clone()),
            layers: vec![GoDescriptor::of(ART_TYPE_A, &ref_blob_a)],
            annotations: ann("test layer a"),
        }));
        let refs_b_layer = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            media_type: MT_OCI_MANIFEST.into(),
            artifact_type: ART_TYPE_B.into(),
            config: empty_desc.clone(),
            subject: Some(subject4.clone()),
            layers: vec![GoDescriptor::of(ART_TYPE_B, &ref_blob_b)],
            annotations: ann("test layer b"),
        }));
        // the same as B but based on a subject that has not been pushed
        let refs_c_layer = TestBlob::new(go_json(&GoManifest {
            schema_version: 2,
            media_type: MT_OCI_MANIFEST.into(),
            artifact_type: ART_TYPE_B.into(),
            config: empty_desc.clone(),
            subject: Some(subject3),
            layers: vec![GoDescriptor::of(ART_TYPE_B, &ref_blob_b)],
            ..Default::default()
        }));
        let refs_index = TestBlob::new(go_json(&GoIndex {
            schema_version: 2,
            media_type: MT_OCI_INDEX.into(),
            artifact_type: ART_TYPE_INDEX.into(),
            manifests: vec![
                GoDescriptor::of(MT_OCI_MANIFEST, &refs_a_config),
                GoDescriptor::of(MT_OCI_MANIFEST, &refs_a_layer),
            ],
            subject: Some(subject4),
            annotations: ann("test index"),
        }));
        let mut annotation_values = HashMap::new();
        annotation_values.insert(refs_a_config.digest.clone(), "test config a".to_string());
        annotation_values.insert(refs_b_config.digest.clone(), "test config b".to_string());
        annotation_values.insert(refs_a_layer.digest.clone(), "test layer a".to_string());
        annotation_values.insert(refs_b_layer.digest.clone(), "test layer b".to_string());
        annotation_values.insert(refs_index.digest.clone(), "test index".to_string());
        let er = |b: &TestBlob, mt: &str, at: &str| ExpectedReferrer {
            digest: b.digest.clone(),
            media_type: mt.to_string(),
            size: b.len(),
            artifact_type: at.to_string(),
        };
        let referrers_of_m4 = vec![
            er(&refs_a_config, MT_OCI_MANIFEST, ART_TYPE_A),
            er(&refs_a_layer, MT_OCI_MANIFEST, ART_TYPE_A),
            er(&refs_index, MT_OCI_INDEX, ART_TYPE_INDEX),
            er(&refs_b_config, MT_OCI_MANIFEST, ART_TYPE_B),
            er(&refs_b_layer, MT_OCI_MANIFEST, ART_TYPE_B),
        ];

        SuiteData {
            configs,
            manifests,
            layer,
            empty_layer_manifest,
            blob_a,
            blob_b,
            blob_b_chunk1: c1,
            blob_b_chunk2: c2,
            blob_b_chunk1_range: r1,
            blob_b_chunk2_range: r2,
            empty_json,
            ref_blob_a,
            ref_blob_b,
            refs_a_config,
            refs_b_config,
            refs_a_layer,
            refs_b_layer,
            refs_c_layer,
            refs_index,
            annotation_values,
            referrers_of_m4,
            dummy_digest: sha256_of(b"hello world"),
        }
    }

    /// `setupChunkedBlob(size)`
    pub(super) fn setup_chunked_blob(&mut self, size: usize) {
        let (b, c1, c2, r1, r2) = chunked_blob(size);
        self.blob_b = b;
        self.blob_b_chunk1 = c1;
        self.blob_b_chunk2 = c2;
        self.blob_b_chunk1_range = r1;
        self.blob_b_chunk2_range = r2;
    }
}

pub(super) fn chunked_blob(size: usize) -> (TestBlob, Vec<u8>, Vec<u8>, String, String) {
    let b = TestBlob::new(random_bytes(size));
    let c1 = b.content[..size / 2 + 1].to_vec();
    let c2 = b.content[size / 2 + 1..].to_vec();
    let r1 = format!("0-{}", c1.len() - 1);
    let r2 = format!("{}-{}", c1.len(), b.len() - 1);
    (b, c1, c2, r1, r2)
}
