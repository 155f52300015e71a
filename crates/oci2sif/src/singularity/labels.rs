//! `labels.json`: the image's labels overlaid with the build labels Apptainer adds.

use std::collections::BTreeMap;

use super::dates::build_date_label;
use super::go_json::go_json_indented;
use super::SingularityError;

/// Stored as `org.label-schema.usage.apptainer.version`; Apptainer puts its own version there.
pub const BUILDER_VERSION_LABEL: &str = concat!("oci2sif-", env!("CARGO_PKG_VERSION"));

/// The labels Apptainer stores: the image's own labels overlaid with its build labels
/// (`addBuildLabels` in `internal/pkg/build/metadata.go`). `build-arch` is the image's
/// architecture rather than the build host's, which is what a build on a matching host gives.
pub fn labels(
    config_labels: &BTreeMap<String, String>,
    source_ref: &str,
    arch: &str,
    build_time: i64,
) -> BTreeMap<String, String> {
    let mut labels = config_labels.clone();
    let build_labels = [
        ("org.label-schema.schema-version", "1.0".to_string()),
        ("org.label-schema.build-date", build_date_label(build_time)),
        (
            "org.label-schema.usage.apptainer.version",
            BUILDER_VERSION_LABEL.to_string(),
        ),
        (
            "org.label-schema.usage.singularity.deffile.bootstrap",
            "docker".to_string(),
        ),
        (
            "org.label-schema.usage.singularity.deffile.from",
            source_ref.to_string(),
        ),
        ("org.label-schema.build-arch", arch.to_string()),
    ];
    for (key, value) in build_labels {
        labels.insert(key.to_string(), value);
    }
    labels
}

/// `labels.json` as Go's `json.MarshalIndent(labels, "", "\t")`: sorted keys, tab indent,
/// `<>&` escaped, no trailing newline.
pub fn labels_json(labels: &BTreeMap<String, String>) -> Result<Vec<u8>, SingularityError> {
    go_json_indented(labels).map_err(|source| SingularityError::Json {
        what: "labels.json",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_json_is_go_marshal_indent() {
        let mut config_labels = BTreeMap::new();
        config_labels.insert("maintainer".to_string(), "A <a@b.c> & co".to_string());
        config_labels.insert(
            "org.label-schema.schema-version".to_string(),
            "0.9".to_string(),
        );
        let labels = labels(
            &config_labels,
            "127.0.0.1:5000/alice/tool:1",
            "amd64",
            1_700_000_000,
        );
        let json = String::from_utf8(labels_json(&labels).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                "{\n",
                "\t\"maintainer\": \"A \\u003ca@b.c\\u003e \\u0026 co\",\n",
                "\t\"org.label-schema.build-arch\": \"amd64\",\n",
                "\t\"org.label-schema.build-date\": \"Tuesday_14_November_2023_22:13:20_UTC\",\n",
                "\t\"org.label-schema.schema-version\": \"1.0\",\n",
                "\t\"org.label-schema.usage.apptainer.version\": \"oci2sif-0.1.0\",\n",
                "\t\"org.label-schema.usage.singularity.deffile.bootstrap\": \"docker\",\n",
                "\t\"org.label-schema.usage.singularity.deffile.from\": \"127.0.0.1:5000/alice/tool:1\"\n",
                "}"
            )
        );
        assert_eq!(labels_json(&BTreeMap::new()).unwrap(), b"{}");
    }
}
