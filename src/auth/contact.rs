//! A user's notification settings (`user add|mod --email ADDR`, `user mod --notify CHANNELS`):
//! the address is validated as an RFC 5321 mailbox address (`lettre::Address`) before it is
//! stored, the channels are one of `mail|webhook|both|none`.

use std::sync::Arc;

use super::manage::ManageError;
use crate::meta::{self, Db, NotifyChannels};

/// Longest address SMTP carries (RFC 5321's path limit minus the angle brackets).
const MAX_EMAIL: usize = 254;

/// `address`, checked; the form that is stored.
pub fn check_email(address: &str) -> Result<String, ManageError> {
    let trimmed = address.trim();
    if trimmed.len() > MAX_EMAIL {
        return Err(ManageError::Invalid(format!(
            "the e-mail address is longer than {MAX_EMAIL} characters"
        )));
    }
    trimmed
        .parse::<lettre::Address>()
        .map(|a| a.to_string())
        .map_err(|e| {
            ManageError::Invalid(format!(
                "{trimmed:?} is not an e-mail address (user@domain): {e}"
            ))
        })
}

/// `mail|webhook|both|none`.
pub fn parse_channels(s: &str) -> Result<NotifyChannels, ManageError> {
    NotifyChannels::parse(s).ok_or_else(|| {
        ManageError::Invalid(format!(
            "--notify {s:?} is not one of {}",
            NotifyChannels::NAMES
        ))
    })
}

/// What `user mod` changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactChange {
    /// `Some(None)` removes the address.
    pub email: Option<Option<String>>,
    pub notify: Option<NotifyChannels>,
}

/// Applies `change` to user `name` in one transaction; false if there is no such user.
pub fn apply(db: &Arc<Db>, name: &str, change: &ContactChange) -> Result<bool, ManageError> {
    let email = match &change.email {
        Some(Some(a)) => Some(Some(check_email(a)?)),
        Some(None) => Some(None),
        None => None,
    };
    let notify = change.notify;
    Ok(db.write_blocking(|tx| {
        if meta::user_contact(tx, name)?.is_none() {
            return Ok(false);
        }
        if let Some(email) = &email {
            meta::set_user_email(tx, name, email.as_deref())?;
        }
        if let Some(notify) = notify {
            meta::set_user_notify(tx, name, notify)?;
        }
        Ok(true)
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            check_email(" alice@example.org ").unwrap(),
            "alice@example.org"
        );
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a b@example.org",
            "alice@exa mple.org",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_email(&format!("{}@example.org", "a".repeat(300))).is_err());
    }

    #[test]
    fn channels_are_one_of_four() {
        assert_eq!(parse_channels("both").unwrap(), NotifyChannels::Both);
        assert!(parse_channels("sms")
            .unwrap_err()
            .to_string()
            .contains("mail, webhook, both, none"));
    }
}
