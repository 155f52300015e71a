//! The parts of an OCI/Docker image config the builder reads, and the `config` object re-encoded
//! the way Go encodes go-containerregistry's `v1.Config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The parts of an OCI/Docker image config file the builder reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    /// RFC 3339 creation time, the reproducible-build clock.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
}

/// A struct Go encodes with `omitempty` on every field and decodes leaving a field at its zero
/// value on JSON `null`: each field gets both rules, so the field lists below read like the Go
/// structs they copy (same names, same order).
macro_rules! go_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "PascalCase", default)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(deserialize_with = "null_as_default", skip_serializing_if = "GoZero::is_zero")]
                pub $field: $ty,
            )*
        }
    };
}

go_struct! {
    /// The image config's `config` object, as go-containerregistry's `v1.Config`: Apptainer 1.3+
    /// decodes it into that struct and re-encodes it as `oci-config.json`
    /// (`internal/pkg/build/sources/conveyorPacker_oci.go` insertOCIConfig), so the field order
    /// and the `omitempty` rules are that struct's.
    pub struct ContainerConfig {
        pub attach_stderr: bool,
        pub attach_stdin: bool,
        pub attach_stdout: bool,
        pub cmd: Vec<String>,
        pub healthcheck: Option<HealthConfig>,
        pub domainname: String,
        pub entrypoint: Vec<String>,
        pub env: Vec<String>,
        pub hostname: String,
        pub image: String,
        pub labels: BTreeMap<String, String>,
        pub on_build: Vec<String>,
        pub open_stdin: bool,
        pub stdin_once: bool,
        pub tty: bool,
        pub user: String,
        pub volumes: BTreeMap<String, EmptyObject>,
        pub working_dir: String,
        pub exposed_ports: BTreeMap<String, EmptyObject>,
        pub args_escaped: bool,
        pub network_disabled: bool,
        pub mac_address: String,
        pub stop_signal: String,
        pub shell: Vec<String>,
    }
}

go_struct! {
    /// go-containerregistry's `v1.HealthConfig` (durations are integer nanoseconds).
    pub struct HealthConfig {
        pub test: Vec<String>,
        pub interval: i64,
        pub timeout: i64,
        pub start_period: i64,
        pub retries: i64,
    }
}

/// Go's `struct{}` map value (`ExposedPorts`, `Volumes`): any JSON value in, `{}` out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(EmptyObject)
    }
}

/// Go's decoder leaves a field at its zero value on JSON `null`; Docker writes `"Cmd": null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What Go's `omitempty` leaves out: false, 0, "", empty slices and maps, nil pointers.
trait GoZero {
    fn is_zero(&self) -> bool;
}

impl GoZero for bool {
    fn is_zero(&self) -> bool {
        !*self
    }
}

impl GoZero for i64 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl GoZero for String {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl<T> GoZero for Vec<T> {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl<K, V> GoZero for BTreeMap<K, V> {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl<T> GoZero for Option<T> {
    fn is_zero(&self) -> bool {
        self.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singularity::go_json::go_json;

    #[test]
    fn oci_config_is_reencoded_in_go_field_order() {
        let config: ImageConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["A=1"],"Cmd":null,"Entrypoint":["/x"],
                "Labels":{"b":"2","a":"1"},"ExposedPorts":{"80/tcp":{}},"User":"",
                "Unknown":5,"Healthcheck":{"Test":["CMD","true"],"Interval":1000}}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(go_json(&config.config).unwrap()).unwrap(),
            r#"{"Healthcheck":{"Test":["CMD","true"],"Interval":1000},"Entrypoint":["/x"],"Env":["A=1"],"Labels":{"a":"1","b":"2"},"ExposedPorts":{"80/tcp":{}}}"#
        );
        let empty: ImageConfigFile = serde_json::from_str(r#"{"config":null}"#).unwrap();
        assert_eq!(go_json(&empty.config).unwrap(), b"{}");
    }
}
