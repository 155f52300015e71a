//! What `fetch REF` accepts: `alice/tool:1`, `alice/tool` (tag `latest`), `alice/tool@sha256:…`
//! or a bare manifest digest `sha256:…`, as the `/sif/…` path the registry resolves.

use crate::registry::names::{Digest, RepositoryName, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// As the user wrote it, for messages.
    pub text: String,
    /// The part of `/sif/<path>` the registry resolves: `name:tag` or a digest.
    pub sif_path: String,
}

impl ImageRef {
    pub fn parse(text: &str) -> anyhow::Result<ImageRef> {
        let text = text.trim();
        let sif_path = if let Ok(d) = Digest::parse(text) {
            d.as_str().to_owned()
        } else if let Some((name, digest)) = text.split_once('@') {
            RepositoryName::parse(name).map_err(|e| bad(text, e))?;
            // The registry serves a digest through any repository the caller may read.
            Digest::parse(digest)
                .map_err(|e| bad(text, e))?
                .as_str()
                .to_owned()
        } else {
            // A colon after the last slash separates the tag (a registry host:port never
            // reaches here: the site's URL names the registry).
            let (name, tag) = match text.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t),
                _ => (text, "latest"),
            };
            let name = RepositoryName::parse(name).map_err(|e| bad(text, e))?;
            let tag = Tag::parse(tag).map_err(|e| bad(text, e))?;
            format!("{}:{}", name.as_str(), tag.as_str())
        };
        Ok(ImageRef {
            text: text.to_owned(),
            sif_path,
        })
    }
}

fn bad(text: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "{text:?} is not an image reference (alice/tool:1, alice/tool@sha256:…, sha256:…): {e}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn forms() {
        assert_eq!(
            ImageRef::parse("alice/tool:1").unwrap().sif_path,
            "alice/tool:1"
        );
        assert_eq!(
            ImageRef::parse("alice/tool").unwrap().sif_path,
            "alice/tool:latest"
        );
        assert_eq!(
            ImageRef::parse(&format!("alice/tool@{D}"))
                .unwrap()
                .sif_path,
            D
        );
        assert_eq!(ImageRef::parse(D).unwrap().sif_path, D);
        for bad in [
            "",
            "Alice/Tool:1",
            "alice/tool:",
            "alice/tool@sha256:12",
            "a//b:1",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
