//! Parses `/v2/...` paths. Repository names contain slashes, so the router cannot match them
//! with patterns; the suffix decides the route, and the name is everything before it.

/// A `/v2/` route with its raw (not yet validated) parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, session: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

/// Parses the path after `/v2/`; `None` if it matches no route.
pub fn parse(rest: &str) -> Option<Route<'_>> {
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { name });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart { name });
    }
    // The last segment is a reference, digest or session id and never contains '/'.
    let (prefix, last) = rest.rsplit_once('/')?;
    if last.is_empty() {
        return None;
    }
    if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload {
            name,
            session: last,
        });
    }
    if let Some(name) = prefix.strip_suffix("/manifests") {
        return Some(Route::Manifest {
            name,
            reference: last,
        });
    }
    if let Some(name) = prefix.strip_suffix("/blobs") {
        return Some(Route::Blob { name, digest: last });
    }
    if let Some(name) = prefix.strip_suffix("/referrers") {
        return Some(Route::Referrers { name, digest: last });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse(""), Some(Route::Base));
        assert_eq!(parse("_catalog"), Some(Route::Catalog));
        assert_eq!(parse("a/b/tags/list"), Some(Route::Tags { name: "a/b" }));
        assert_eq!(
            parse("a/manifests/latest"),
            Some(Route::Manifest {
                name: "a",
                reference: "latest"
            })
        );
        assert_eq!(
            parse("a/b/blobs/uploads/"),
            Some(Route::UploadStart { name: "a/b" })
        );
        assert_eq!(
            parse("a/blobs/uploads/123"),
            Some(Route::Upload {
                name: "a",
                session: "123"
            })
        );
        // A repository may itself be called ".../blobs/uploads".
        assert_eq!(
            parse("x/blobs/uploads/blobs/sha256:ab"),
            Some(Route::Blob {
                name: "x/blobs/uploads",
                digest: "sha256:ab"
            })
        );
        assert_eq!(
            parse("a/referrers/sha256:ab"),
            Some(Route::Referrers {
                name: "a",
                digest: "sha256:ab"
            })
        );
        assert_eq!(parse("a/manifests/"), None);
        assert_eq!(parse("a/unknown/x"), None);
    }
}
