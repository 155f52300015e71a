//! `inspect-metadata.json`: what `apptainer inspect --all` reports about the finished image,
//! read back from the tree after the `/.singularity.d` files are in place.

use std::collections::BTreeMap;

use serde::Serialize;

use super::editor::{resolve, Resolved};
use super::go_json::go_json;
use super::scripts::{DEFFILE_PATH, ENV_DIR, RUNSCRIPT_PATH};
use super::SingularityError;
use crate::tree::{Kind, Spool, Tree};

/// Image-provided files read back for `inspect-metadata.json` (test script, help, extra env
/// scripts) are skipped beyond this size, so a hostile image cannot make the build load a
/// multi-gigabyte "script" into memory.
const MAX_INSPECTED_FILE: u64 = 1 << 20;

/// `inspect-metadata.json`: `apptainer inspect --all` output re-marshalled (`pkg/inspect`).
/// Field order is the Go struct's; empty fields are omitted.
#[derive(Serialize)]
struct InspectMetadata {
    data: InspectData,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct InspectData {
    attributes: InspectAttributes,
}

#[derive(Serialize, Default)]
struct InspectAttributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    runscript: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    test: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    helpfile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deffile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    startscript: String,
}

pub(super) fn inspect_metadata(
    tree: &Tree,
    spool: &Spool,
    labels: BTreeMap<String, String>,
) -> Result<Vec<u8>, SingularityError> {
    let reader = ImageFiles { tree, spool };
    let attributes = InspectAttributes {
        environment: reader.inspected_environment()?,
        labels,
        runscript: reader.inspected_text(RUNSCRIPT_PATH)?,
        test: reader.inspected_text(".singularity.d/test")?,
        helpfile: reader.inspected_text(".singularity.d/runscript.help")?,
        deffile: reader.inspected_text(DEFFILE_PATH)?,
        startscript: reader.inspected_text(".singularity.d/startscript")?,
    };
    let metadata = InspectMetadata {
        data: InspectData { attributes },
        kind: "container",
    };
    go_json(&metadata).map_err(|source| SingularityError::Json {
        what: "inspect-metadata.json",
        source,
    })
}

/// Reads files of the finished image the way `apptainer inspect` does.
struct ImageFiles<'a> {
    tree: &'a Tree,
    spool: &'a Spool,
}

impl ImageFiles<'_> {
    /// Contents of a regular file (following symlinks), if it exists and is small enough.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, SingularityError> {
        let Ok(Resolved::Entry { id, .. }) = resolve(self.tree, path.as_bytes(), true) else {
            return Ok(None);
        };
        match self.tree.inode(id).kind {
            Kind::File(content) if content.len() <= MAX_INSPECTED_FILE => {
                let mut buf = Vec::new();
                self.spool.read_into(content, &mut buf)?;
                Ok(Some(buf))
            }
            _ => Ok(None),
        }
    }

    /// A file as `apptainer inspect` reports it: text with trailing newlines trimmed.
    fn inspected_text(&self, path: &str) -> Result<String, SingularityError> {
        Ok(self
            .read_file(path)?
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .unwrap_or_default())
    }

    /// The env scripts `inspect` reports: `10-docker*.sh` and `9*-environment.sh`.
    fn inspected_environment(&self) -> Result<BTreeMap<String, String>, SingularityError> {
        let Ok(Resolved::Entry { id: dir, .. }) = resolve(self.tree, ENV_DIR.as_bytes(), true)
        else {
            return Ok(BTreeMap::new());
        };
        let names: Vec<String> = self
            .tree
            .children(dir)
            .into_iter()
            .flat_map(|children| children.keys())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .filter(|name| is_inspected_env_script(name))
            .collect();
        let mut environment = BTreeMap::new();
        for name in names {
            let path = format!("{ENV_DIR}/{name}");
            if let Some(bytes) = self.read_file(&path)? {
                let text = String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\n')
                    .to_string();
                environment.insert(format!("/{path}"), text);
            }
        }
        Ok(environment)
    }
}

fn is_inspected_env_script(name: &str) -> bool {
    let docker = name.starts_with("10-docker") && name.ends_with(".sh") && name.len() >= 12;
    let environment =
        name.starts_with('9') && name.ends_with("-environment.sh") && name.len() >= 16;
    docker || environment
}
