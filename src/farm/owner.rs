//! Lease owners: an in-process worker is `local:<host>:<run>:<n>`, a remote builder process
//! `remote:<builder>:<instance>`, so the audit trail and the status name the builder.

const REMOTE_PREFIX: &str = "remote:";

/// The lease owner of builder `builder`'s process `instance`.
pub fn remote(builder: &str, instance: &str) -> String {
    format!("{REMOTE_PREFIX}{builder}:{instance}")
}

/// The builder's name in a remote lease owner; `None` for an in-process worker.
pub fn builder_of(owner: &str) -> Option<&str> {
    owner
        .strip_prefix(REMOTE_PREFIX)
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_name_their_builder() {
        assert_eq!(builder_of(&remote("arm-1", "abc")), Some("arm-1"));
        assert_eq!(builder_of("local:host:x:0"), None);
    }
}
