//! Size bounds on audit records: every field is capped, and the names a client chose (user and
//! repository) are stored as given only when they are valid names. Anything else is stored as a
//! marker with its length and an escaped, truncated prefix, so a 400 KB user name costs the trail
//! a hundred bytes and a control character cannot forge a line in a terminal.

use super::Record;

/// User names: the registry's own limit (see `auth::manage::check_name`).
const MAX_USER: usize = 64;
/// Repository names: the distribution spec's practical limit.
const MAX_REPOSITORY: usize = 255;
/// Of an invalid name, this many characters are kept (escaped).
const INVALID_PREFIX: usize = 48;
/// References, user agents, digests, client addresses and the other short fields.
const MAX_FIELD: usize = 256;
/// Free-text reasons.
const MAX_DETAIL: usize = 1024;

/// Caps every field of `r` in place.
pub fn bound(r: &mut Record) {
    r.user = r.user.take().map(|u| {
        if u.len() <= MAX_USER && crate::auth::manage::check_name(&u).is_ok() {
            u
        } else {
            marked(&u)
        }
    });
    r.repository = r.repository.take().map(|n| {
        if n.len() <= MAX_REPOSITORY && crate::registry::names::RepositoryName::parse(&n).is_ok() {
            n
        } else {
            marked(&n)
        }
    });
    for field in [
        &mut r.auth,
        &mut r.client,
        &mut r.user_agent,
        &mut r.reference,
        &mut r.digest,
        &mut r.slurm_job_id,
    ] {
        if let Some(v) = field.as_mut() {
            truncate(v, MAX_FIELD);
        }
    }
    if let Some(d) = r.detail.as_mut() {
        truncate(d, MAX_DETAIL);
    }
    truncate(&mut r.action, MAX_FIELD);
    truncate(&mut r.outcome, MAX_FIELD);
}

/// `(invalid name, N bytes) "<escaped prefix>…"`.
fn marked(raw: &str) -> String {
    let prefix: String = raw.chars().take(INVALID_PREFIX).collect();
    let cut = if prefix.len() < raw.len() { "…" } else { "" };
    format!(
        "(invalid name, {} bytes) \"{}\"{cut}",
        raw.len(),
        prefix.escape_debug()
    )
}

/// Cuts `s` to at most `max` bytes on a character boundary, saying how long it was.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let total = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&format!("…({total} bytes)"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_capped_and_invalid_names_marked() {
        let mut r = Record::new("auth.failure", "denied");
        r.user = Some("a".repeat(400 << 10));
        r.repository = Some("x/".repeat(32 << 10));
        r.reference = Some("é".repeat(64 << 10));
        r.user_agent = Some("u".repeat(10_000));
        r.detail = Some("d".repeat(1 << 20));
        bound(&mut r);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.len() < 4096, "{} bytes", line.len());
        let user = r.user.unwrap();
        assert!(
            user.starts_with("(invalid name, 409600 bytes) \"aaa"),
            "{user}"
        );
        assert!(r
            .repository
            .unwrap()
            .starts_with("(invalid name, 65536 bytes)"));
        assert!(r.reference.unwrap().ends_with("…(131072 bytes)"));

        let mut ok = Record::new("manifest.pull", "ok");
        ok.user = Some("alice".into());
        ok.repository = Some("alice/app".into());
        bound(&mut ok);
        assert_eq!(ok.user.as_deref(), Some("alice"));
        assert_eq!(ok.repository.as_deref(), Some("alice/app"));

        let mut evil = Record::new("auth.failure", "denied");
        evil.user = Some("x\n{\"forged\":1}".into());
        bound(&mut evil);
        assert_eq!(
            evil.user.as_deref(),
            Some("(invalid name, 14 bytes) \"x\\n{\\\"forged\\\":1}\"")
        );
    }
}
