//! The one parser of `/sif/<reference>[/<view>]` paths, shared by the `/sif` handlers (what a
//! request asks for, and what its audit event names) and the authentication middleware (which
//! repository a challenge names).

use crate::registry::names::Digest;

/// What a `/sif` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The SIF itself.
    Sif,
    /// The job's status (JSON).
    Status,
    /// The build log (text).
    Log,
    /// The SIF's squashfs partition alone (its root filesystem, as apptainer runs it).
    Squashfs,
    /// The enroot image built with the SIF (pyxis's squashfs: the root filesystem plus
    /// `/etc/rc`, `/etc/environment` and `/etc/fstab`), a blob of its own.
    Enroot,
}

impl View {
    /// Whether the view is a file (the SIF, its partition or the enroot image).
    pub fn is_file(self) -> bool {
        matches!(self, View::Sif | View::Squashfs | View::Enroot)
    }
}

/// A parsed `/sif/` path: the reference (a digest or `<repository>:<tag>`) and the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SifPath<'a> {
    pub reference: &'a str,
    pub view: View,
}

const SUFFIXES: [(&str, View); 4] = [
    ("/status", View::Status),
    ("/log", View::Log),
    ("/squashfs", View::Squashfs),
    ("/enroot", View::Enroot),
];

impl<'a> SifPath<'a> {
    /// Parses what follows `/sif/` in a request path.
    pub fn parse(rest: &'a str) -> SifPath<'a> {
        for (suffix, view) in SUFFIXES {
            if let Some(reference) = rest.strip_suffix(suffix) {
                return SifPath { reference, view };
            }
        }
        SifPath {
            reference: rest,
            view: View::Sif,
        }
    }

    /// Parses a whole request path; `None` if it is not under `/sif/`.
    pub fn of_request(path: &'a str) -> Option<SifPath<'a>> {
        path.strip_prefix("/sif/").map(SifPath::parse)
    }

    /// The repository a `<repository>:<tag>` reference names (unvalidated); `None` for a
    /// digest, which names no repository.
    pub fn repository(&self) -> Option<&'a str> {
        if Digest::parse(self.reference).is_ok() {
            return None;
        }
        self.tagged().map(|(name, _)| name)
    }

    /// The tag of a `<repository>:<tag>` reference (unvalidated); `None` for a digest.
    pub fn tag(&self) -> Option<&'a str> {
        if Digest::parse(self.reference).is_ok() {
            return None;
        }
        self.tagged().map(|(_, tag)| tag)
    }

    /// `(repository, tag)` of a reference that is not a digest (both unvalidated).
    pub fn tagged(&self) -> Option<(&'a str, &'a str)> {
        self.reference.rsplit_once(':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_and_repositories() {
        let p = SifPath::parse("alice/tool:1/status");
        assert_eq!((p.reference, p.view), ("alice/tool:1", View::Status));
        assert_eq!(p.repository(), Some("alice/tool"));
        let p = SifPath::parse("alice/tool:1/squashfs");
        assert_eq!(p.view, View::Squashfs);
        assert_eq!(SifPath::parse("alice/tool:1/log").view, View::Log);
        let p = SifPath::parse("alice/tool:1/enroot");
        assert_eq!((p.reference, p.view), ("alice/tool:1", View::Enroot));
        let digest = format!("sha256:{}", "a".repeat(64));
        let p = SifPath::parse(&digest);
        assert_eq!((p.reference, p.view), (digest.as_str(), View::Sif));
        assert_eq!(p.repository(), None);
        assert_eq!(SifPath::parse("noreference").repository(), None);
        assert!(SifPath::of_request("/v2/x").is_none());
        assert_eq!(
            SifPath::of_request("/sif/a/b:2").and_then(|p| p.repository()),
            Some("a/b")
        );
    }
}
