//! The mail channel: one plain-text message per notification, through the site's SMTP relay
//! (`lettre` on tokio and rustls; never a local sendmail). The relay's certificate is checked
//! against `ca_file` or the system bundle; STARTTLS is required when configured, never
//! opportunistic. The Message-ID is the event's id, so a mail re-sent after a crash is
//! recognisably the same message.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::message::Notice;
use super::Secret;
use crate::config::{MailConfig, SmtpTls};
use crate::meta::OutboxRow;

/// Where Debian keeps the system CA bundle (as `client::tls`).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("[notifications.mail] relay is empty: name the SMTP relay host")]
    NoRelay,
    #[error("[notifications.mail] from {0:?} is not a mail address: {1}")]
    From(String, String),
    #[error("[notifications.mail] username and password_file go together")]
    HalfCredentials,
    #[error("[notifications.mail] CA certificates {0}: {1}")]
    Ca(String, String),
    #[error("[notifications.mail] TLS for {0}: {1}")]
    Tls(String, String),
}

/// The relay, ready to send through.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &MailConfig, password: Option<Secret>) -> Result<Mailer, MailError> {
        if config.relay.trim().is_empty() {
            return Err(MailError::NoRelay);
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| {
                MailError::From(config.from.clone(), e.to_string())
            })?;
        let relay = config.relay.trim().to_owned();
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay)
            .port(port)
            .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        builder = match config.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => {
                builder.tls(Tls::Required(tls(&relay, config.ca_file.as_deref())?))
            }
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&relay, config.ca_file.as_deref())?)),
        };
        match (&config.username, password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password.expose_str().to_owned(),
                ));
            }
            (None, None) => {}
            _ => return Err(MailError::HalfCredentials),
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends the mail of `row`; `Err` says why it was not accepted (no secret in it).
    pub async fn deliver(&self, row: &OutboxRow, notice: &Notice) -> Result<(), String> {
        let Some(address) = row.address.as_deref() else {
            return Err("the notification has no recipient address".into());
        };
        let to: Mailbox = address
            .parse()
            .map_err(|e| format!("the recipient address {address:?} is invalid: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(notice.subject())
            .message_id(Some(format!("<{}@hpc-registry>", row.event_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(notice.body())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("the SMTP relay did not take the message: {e}"))
    }
}

/// TLS to `relay`, trusting the certificates of `ca_file`, else the system's.
fn tls(relay: &str, ca_file: Option<&Path>) -> Result<TlsParameters, MailError> {
    crate::tls::install_provider();
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let ca = |e: String| MailError::Ca(path.display().to_string(), e);
    // Only the anchors named here: the same bundle `src/client` trusts.
    let mut builder =
        TlsParameters::builder(relay.to_owned()).certificate_store(CertificateStore::None);
    let mut found = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca(e.to_string()))? {
        let cert = cert.map_err(|e| ca(e.to_string()))?;
        let cert = Certificate::from_der(cert.as_ref().to_vec()).map_err(|e| ca(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
        found += 1;
    }
    if found == 0 {
        return Err(ca("no certificate in the file".into()));
    }
    builder
        .build_rustls()
        .map_err(|e| MailError::Tls(relay.to_owned(), e.to_string()))
}
