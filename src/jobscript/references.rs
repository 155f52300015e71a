//! The registry images a batch script fetches or runs, by line: `hpc-registry run|fetch REF`
//! (also behind `exec`, `srun`, `$(…)`, with `"$IMAGE"` resolved from the script's own
//! assignments), the prolog's prefetch list `#SBATCH --comment="hpc-registry: REF …"`, and
//! pyxis's `--container-image=REF`.

use super::options;
use super::script::{self, Kind, Vars};
use crate::names::{Digest, RepositoryName, Tag};

/// Options of `hpc-registry run|fetch` that take a value (the rest are flags).
const VALUE_OPTIONS: &[&str] = &["--platform", "--wait"];

/// Every image reference of `script` with its 1-based line, in order; the same image on two
/// lines is listed twice. References are as written (trimmed), so the caller resolves each
/// distinct one and hands the answers to [`super::lint`] keyed by the same text.
pub fn image_references(script: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut vars = Vars::default();
    for line in script::lines(script) {
        match line.kind {
            Kind::Directive { rest, late: false } => {
                for d in options::parse_line(rest).into_iter().flatten() {
                    if d.name == "comment" {
                        for r in prefetch_list(d.value.as_deref().unwrap_or_default()) {
                            out.push((line.number, r));
                        }
                    }
                }
            }
            Kind::Command => {
                for command in script::simple_commands(line.text) {
                    if let Some(r) = command_reference(&command, &vars) {
                        out.push((line.number, r));
                    }
                    vars.assign(&command);
                }
            }
            _ => {}
        }
    }
    out
}

/// The words after `hpc-registry:` up to a `;`, split at spaces and commas (as the prolog
/// reads them).
pub fn prefetch_list(comment: &str) -> Vec<String> {
    let Some((_, rest)) = comment.split_once("hpc-registry:") else {
        return Vec::new();
    };
    let rest = rest.split(';').next().unwrap_or_default();
    rest.split([' ', ',', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The image of one simple command, if it runs one of ours.
fn command_reference(command: &[String], vars: &Vars) -> Option<String> {
    if let Some(r) = container_image(command) {
        return Some(r);
    }
    let (i, program) = script::program(command)?;
    if program != "hpc-registry" {
        return None;
    }
    let sub = command.get(i + 1)?;
    if sub != "run" && sub != "fetch" {
        return None;
    }
    let mut j = i + 2;
    while let Some(w) = command.get(j) {
        if VALUE_OPTIONS.contains(&w.as_str()) {
            j += 2;
        } else if w.starts_with('-') {
            j += 1;
        } else {
            return vars.expand(w).map(|r| r.trim().to_owned());
        }
    }
    None
}

/// pyxis: `srun --container-image=REF` (a `registry#` prefix names the host; ours is implied).
fn container_image(command: &[String]) -> Option<String> {
    let mut it = command.iter();
    while let Some(w) = it.next() {
        let value = if let Some(v) = w.strip_prefix("--container-image=") {
            v.to_owned()
        } else if w == "--container-image" {
            it.next()?.clone()
        } else {
            continue;
        };
        let r = value.rsplit('#').next().unwrap_or_default().to_owned();
        // docker://, a squashfs file or a path: not the registry's to answer.
        return (!r.contains("://") && !r.starts_with(['/', '.'])).then_some(r);
    }
    None
}

/// Whether `text` is an image reference the registry resolves: `alice/tool:1`, `alice/tool`
/// (tag `latest`), `alice/tool@sha256:…` or a bare manifest digest.
pub fn check_reference(text: &str) -> Result<(), String> {
    let bad = |e: String| {
        format!(
            "{text:?} is not an image reference (alice/tool:1, alice/tool@sha256:…, sha256:…): {e}"
        )
    };
    if Digest::parse(text).is_ok() {
        return Ok(());
    }
    if let Some((name, digest)) = text.split_once('@') {
        RepositoryName::parse(name).map_err(|e| bad(e.to_string()))?;
        return Digest::parse(digest)
            .map(|_| ())
            .map_err(|e| bad(e.to_string()));
    }
    let (name, tag) = match text.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (text, None),
    };
    RepositoryName::parse(name).map_err(|e| bad(e.to_string()))?;
    if let Some(tag) = tag {
        Tag::parse(tag).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_a_script_names_an_image() {
        let script = r#"#!/bin/bash
#SBATCH --comment="hpc-registry: alice/a:1, alice/b:2;other"
IMAGE=${IMAGE:-alice/c:3}
exec hpc-registry run "$IMAGE" --nv -- python x.py
SIF=$(hpc-registry fetch --wait 30m --quiet alice/d:4)
srun --container-image=registry:5000#alice/e:5 true
srun /opt/bin/hpc-registry run --platform linux/arm64 alice/f:6
hpc-registry run "$UNKNOWN"
hpc-registry cache ls
srun --container-image=docker://ubuntu true
#SBATCH --comment="hpc-registry: alice/late:1"
"#;
        assert_eq!(
            image_references(script),
            [
                (2, "alice/a:1".to_owned()),
                (2, "alice/b:2".to_owned()),
                (4, "alice/c:3".to_owned()),
                (5, "alice/d:4".to_owned()),
                (6, "alice/e:5".to_owned()),
                (7, "alice/f:6".to_owned()),
            ]
        );
    }

    #[test]
    fn references() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for ok in [
            "alice/tool:1",
            "alice/tool",
            "library/x:1.0",
            d,
            &format!("a/b@{d}"),
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Alice/x:1",
            "a/b:",
            "a/b@sha256:12",
            "a//b",
            "a/b:bad tag",
        ] {
            assert!(check_reference(bad).is_err(), "{bad:?} accepted");
        }
    }
}
