//! Repository names, tags, digests and references: every piece of a request path that names
//! content is validated here, once, before anything else looks at it.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

/// Why a name, tag or digest was refused; each maps to one spec error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid repository name {0:?}: use lower-case path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by single '/'")]
    Repository(String),
    #[error("invalid tag {0:?}: a tag is 1 to 128 characters of [A-Za-z0-9_.-] and must not start with '.' or '-'")]
    Tag(String),
    #[error("invalid digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
    Digest(String),
    #[error("unsupported digest algorithm {0:?}: this registry accepts sha256 and sha512")]
    Algorithm(String),
}

/// Longest repository name we accept; the spec suggests clients keep `<host>/<name>` under 255.
const MAX_REPOSITORY_LEN: usize = 255;

/// A validated repository name such as `alice/pytorch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let valid =
            !s.is_empty() && s.len() <= MAX_REPOSITORY_LEN && s.split('/').all(is_path_component);
        if valid {
            Ok(RepositoryName(s.to_owned()))
        } else {
            Err(NameError::Repository(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the user, group or public namespace that owns the repository.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, written out by hand so no regex engine is needed.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let head_ok = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let tail_ok = |x: u8| head_ok(x) || x == b'.' || x == b'-';
        let valid =
            !b.is_empty() && b.len() <= 128 && head_ok(b[0]) && b[1..].iter().all(|&x| tail_ok(x));
        if valid {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest algorithms we accept: the brief allows only sha256 and sha512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Hashes a byte slice (manifests; blobs are hashed incrementally by [`Hasher`]).
    pub fn digest(self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self);
        h.update(bytes);
        h.finish()
    }
}

/// A validated content digest, `algorithm:hex`, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| NameError::Digest(s.to_owned()))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            // Syntactically a digest, but of an algorithm we refuse to trust or store.
            other
                if !other.is_empty()
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    }) =>
            {
                return Err(NameError::Algorithm(other.to_owned()))
            }
            _ => return Err(NameError::Digest(s.to_owned())),
        };
        let valid_hex = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex {
            return Err(NameError::Digest(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            text: s.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hex part, used as the file name in the blob store.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `<reference>` of a manifest route: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// Incremental hashing for either accepted algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repository_names() {
        for ok in [
            "alice/pytorch",
            "a",
            "a/b/c",
            "library/busybox",
            "a.b_c__d---e/f0",
        ] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Alice/x", "a//b", "a/", "/a", "a/../b", "..", "a/.b", "a___b", "a_", "-a", "a b",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RepositoryName::parse("alice/x/y").unwrap().namespace(),
            "alice"
        );
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("v1.2-rc_3").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        for bad in ["", ".x", "-x", "a:b", "a/b"] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let d = Algorithm::Sha256.digest(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(Digest::parse(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        )
        .is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(matches!(
            Digest::parse("md5:abc"),
            Err(NameError::Algorithm(_))
        ));
        assert!(Digest::parse(Algorithm::Sha512.digest(b"x").as_str()).is_ok());
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
    }

    proptest! {
        #[test]
        fn parsed_names_round_trip(s in "[a-z0-9._/-]{1,40}") {
            if let Ok(n) = RepositoryName::parse(&s) {
                prop_assert_eq!(n.as_str(), s.as_str());
                prop_assert!(!s.contains("//") && !s.starts_with('/') && !s.ends_with('/'));
                prop_assert!(!s.split('/').any(|c| c == ".." || c == "."));
            }
        }
    }
}
