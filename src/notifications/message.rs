//! What a notification says, channel-independent: the image, its digests, and the lines a user
//! pastes (`hpc-registry run …`, `apptainer pull oras://…`), built from one outbox row.

use crate::meta::OutboxRow;

/// The facts of one notification, as both channels tell them: the outbox row's facts (image,
/// digests, reason) and the lines derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub ready: bool,
    /// `alice/tool:1`, or `alice/tool@sha256:…` for an image pushed without a tag.
    pub reference: String,
    /// The outbox row this notice tells of (repository, tag, digests, platform, reason, log tail).
    pub facts: OutboxRow,
    /// `hpc-registry run REF -- COMMAND [ARGS…]`
    pub run_line: String,
    /// `apptainer pull oras://HOST/REPO:TAG.sif` (only for a ready SIF of a tagged image).
    pub pull_line: Option<String>,
}

impl Notice {
    /// `oras_tag` is the ORAS tag the farm publishes the SIF under (`T.sif`, `T.<arch>.sif`);
    /// `host` the registry as users reach it (`registry.example.org[:port]`).
    pub fn from_row(row: &OutboxRow, host: &str, oras_tag: Option<String>) -> Notice {
        let reference = match &row.tag {
            Some(tag) => format!("{}:{tag}", row.repository),
            None => format!("{}@{}", row.repository, row.manifest_digest),
        };
        let ready = row.event == "ready";
        let pull_line = match (&oras_tag, ready) {
            (Some(t), true) => Some(format!(
                "apptainer pull oras://{host}/{}:{t}",
                row.repository
            )),
            _ => None,
        };
        Notice {
            ready,
            run_line: format!("hpc-registry run {reference} -- COMMAND [ARGS…]"),
            reference,
            facts: row.clone(),
            pull_line,
        }
    }

    /// The mail's subject line.
    pub fn subject(&self) -> String {
        if self.ready {
            format!("SIF ready: {} ({})", self.reference, self.facts.platform)
        } else {
            format!(
                "SIF build failed: {} ({})",
                self.reference, self.facts.platform
            )
        }
    }

    /// The mail's plain-text body.
    pub fn body(&self) -> String {
        let mut b = String::new();
        if self.ready {
            b.push_str(&format!(
                "The Apptainer SIF of {} ({}) is ready.\n\n",
                self.reference, self.facts.platform
            ));
        } else {
            b.push_str(&format!(
                "The Apptainer SIF of {} ({}) could not be built.\n\n",
                self.reference, self.facts.platform
            ));
        }
        b.push_str(&format!("Image:           {}\n", self.reference));
        b.push_str(&format!(
            "Manifest digest: {}\n",
            self.facts.manifest_digest
        ));
        if let Some(d) = &self.facts.sif_digest {
            b.push_str(&format!("SIF digest:      {d}\n"));
        }
        if let Some(size) = self.facts.sif_size {
            b.push_str(&format!("SIF size:        {size} bytes\n"));
        }
        if self.ready {
            b.push_str("\nRun it in a batch job:\n\n");
            b.push_str(&format!("    {}\n", self.run_line));
            if let Some(pull) = &self.pull_line {
                b.push_str("\nor fetch the SIF file:\n\n");
                b.push_str(&format!("    {pull}\n"));
            }
        } else {
            b.push_str(&format!(
                "\nReason: {}\n",
                self.facts.reason.as_deref().unwrap_or("(none recorded)")
            ));
            if let Some(log) = self
                .facts
                .log_tail
                .as_deref()
                .filter(|l| !l.trim().is_empty())
            {
                b.push_str("\nEnd of the build log:\n\n");
                for line in log.lines() {
                    b.push_str(&format!("    {line}\n"));
                }
            }
            b.push_str(&format!(
                "\nOnce fixed, push the image again; `{}` then waits for the new SIF.\n",
                self.run_line
            ));
        }
        b.push_str("\n-- \nhpc-registry (you opted in: `hpc-registry user mod NAME --notify none` stops these)\n");
        b
    }
}

/// A sample outbox row for the channels' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::meta::OutboxRow;

    pub(crate) fn row(event: &str) -> OutboxRow {
        OutboxRow {
            id: 7,
            event_id: "e-1".into(),
            channel: "mail".into(),
            event: event.into(),
            user: "alice".into(),
            address: Some("alice@example.org".into()),
            job_id: 3,
            repository: "alice/tool".into(),
            tag: Some("1".into()),
            manifest_digest: "sha256:m".into(),
            platform: "linux/amd64".into(),
            sif_digest: (event == "ready").then(|| "sha256:s".into()),
            sif_size: (event == "ready").then_some(4096),
            reason: (event == "failed").then(|| "layer 1 is not a tar".into()),
            log_tail: (event == "failed").then(|| "unpacking\nerror: bad tar".into()),
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            created_at: 0,
            finished_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::row;
    use super::*;

    #[test]
    fn a_ready_mail_names_the_image_the_digests_and_the_lines_to_paste() {
        let n = Notice::from_row(&row("ready"), "reg:5000", Some("1.sif".into()));
        assert_eq!(n.subject(), "SIF ready: alice/tool:1 (linux/amd64)");
        let body = n.body();
        for needle in [
            "alice/tool:1",
            "sha256:m",
            "sha256:s",
            "4096 bytes",
            "hpc-registry run alice/tool:1 -- COMMAND",
            "apptainer pull oras://reg:5000/alice/tool:1.sif",
        ] {
            assert!(body.contains(needle), "{needle} in\n{body}");
        }
    }

    #[test]
    fn a_failure_mail_gives_the_reason_and_the_log_tail() {
        let n = Notice::from_row(&row("failed"), "reg:5000", Some("1.sif".into()));
        assert!(n.subject().starts_with("SIF build failed: alice/tool:1"));
        let body = n.body();
        assert!(body.contains("Reason: layer 1 is not a tar"), "{body}");
        assert!(body.contains("    error: bad tar"), "{body}");
        assert!(!body.contains("apptainer pull"), "{body}");
    }

    #[test]
    fn an_untagged_image_is_named_by_digest() {
        let mut r = row("ready");
        r.tag = None;
        let n = Notice::from_row(&r, "reg", None);
        assert_eq!(n.reference, "alice/tool@sha256:m");
        assert_eq!(n.pull_line, None);
    }
}
