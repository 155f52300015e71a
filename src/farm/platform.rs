//! Platform strings (`os/arch[/variant]`) and how a configured or requested platform matches an
//! image's. `linux/arm64` must match the `linux/arm64/v8` that buildx writes, as containerd's
//! matcher does: a platform without a variant matches any variant of its os/arch, and the
//! architectures' default variants (arm64 → v8, arm → v7) are filled in before comparing.

/// True if `wanted` (from the config or a `?platform=` query) selects an image of `actual`.
pub fn matches(wanted: &str, actual: &str) -> bool {
    let (w, a) = (normalize(wanted), normalize(actual));
    if w.0 != a.0 || w.1 != a.1 {
        return false;
    }
    !has_variant(wanted) || w.2 == a.2
}

/// `os/arch[/variant]` of an index entry's platform.
pub fn of_oci(p: &oci_spec::image::Platform) -> String {
    let base = format!("{}/{}", p.os(), p.architecture());
    match p.variant().as_deref() {
        Some(v) if !v.is_empty() => format!("{base}/{v}"),
        _ => base,
    }
}

fn has_variant(platform: &str) -> bool {
    platform.split('/').nth(2).is_some_and(|v| !v.is_empty())
}

fn normalize(platform: &str) -> (String, String, String) {
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("").to_ascii_lowercase();
    let arch = parts.next().unwrap_or("").to_ascii_lowercase();
    let variant = parts.next().unwrap_or("").to_ascii_lowercase();
    let variant = match (arch.as_str(), variant.as_str()) {
        ("arm64", "") => "v8".to_owned(),
        ("arm", "") => "v7".to_owned(),
        _ => variant,
    };
    (os, arch, variant)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn variants_and_defaults() {
        assert!(matches("linux/amd64", "linux/amd64"));
        assert!(matches("linux/arm64", "linux/arm64/v8"));
        assert!(matches("linux/arm64/v8", "linux/arm64"));
        assert!(matches("linux/arm", "linux/arm/v6"));
        assert!(!matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!matches("linux/amd64", "linux/arm64"));
        assert!(!matches("linux/amd64", "windows/amd64"));
    }
}
