//! Notifications when a SIF is ready or failed (issue 13 point 7), on the real server with real
//! peers: a real SMTP server (aiosmtpd, STARTTLS with a test CA) receives the ready and failure
//! mail of the user who pushed; a webhook receiver verifies the HMAC signature of CloudEvents
//! that were retried while it was down, across a restart of the registry. Users who did not opt
//! in, or chose mail without an address, get nothing; a refused recipient is given up on and
//! listed by `admin notifications --failed`.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::notify::*;
use crate::support::sif::BUILD_DEADLINE;
use crate::support::users::*;
use crate::support::*;

const ADMIN: &str = "ops";
/// How long a notification may take once its build is done (polling every second, retries 1 s).
const DELIVERY: Duration = Duration::from_secs(60);

/// `hpc-registry ARGS --server URL` as `who`; fails the test if it fails.
fn cli_as(server: &Server, who: &str, args: &[&str]) -> String {
    let url = server.base_url();
    let creds = Creds::of(who);
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str()]);
    cli(
        &all,
        &[
            ("HPC_REGISTRY_USER", creds.user.as_str()),
            ("HPC_REGISTRY_PASSWORD", creds.secret.as_str()),
        ],
        "",
    )
}

fn cli_output_as(server: &Server, who: &str, args: &[&str]) -> Output {
    let url = server.base_url();
    let creds = Creds::of(who);
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str()]);
    cli_output(
        &all,
        &[
            ("HPC_REGISTRY_USER", creds.user.as_str()),
            ("HPC_REGISTRY_PASSWORD", creds.secret.as_str()),
        ],
        "",
    )
}

/// The outbox as the admin lists it (`admin notifications --json [--state S]`).
fn outbox(server: &Server, state: Option<&str>) -> Vec<Value> {
    let mut args = vec!["admin", "notifications", "--json"];
    if let Some(s) = state {
        args.extend(["--state", s]);
    }
    let v: Value = serde_json::from_str(&cli_as(server, ADMIN, &args)).unwrap();
    v["notifications"].as_array().unwrap().clone()
}

/// Polls `GET /sif/REF` as `who` until it is no longer 202; returns the final reply.
fn settled(server: &Server, who: &str, reference: &str) -> Reply {
    let creds = Creds::of(who);
    let until = Instant::now() + BUILD_DEADLINE;
    loop {
        let r = send(
            "GET",
            &server.url(&format!("/sif/{reference}")),
            &Auth::Basic(&creds),
            None,
        );
        if r.status != StatusCode::ACCEPTED || Instant::now() > until {
            return r;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ready_sif_digest(server: &Server, who: &str, reference: &str) -> String {
    let r = settled(server, who, reference);
    assert_eq!(r.status, StatusCode::OK, "{reference}: {}", r.describe());
    sha256_digest(&r.body)
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn mail_tells_the_pusher_ready_and_failed_and_nobody_else() {
    let ca = TestCa::new();
    let sink = SmtpSink::start(Some(&ca));
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[farm]\nmax_attempts = 1\nretry_delay_secs = 1\n\
             [notifications]\npublic_url = \"https://registry.example.org\"\n\
             max_attempts = 2\nretry_base_secs = 1\nretry_max_secs = 1\n\
             [notifications.mail]\nrelay = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
             ca_file = \"{}\"\nfrom = \"HPC registry <registry@example.org>\"\ntimeout_secs = 20\n",
            sink.port,
            ca.path("ca.crt").display()
        ),
    );
    let setup = Setup::new()
        .user("alice", &["--email", "alice@example.org"])
        // An address but no opt-in.
        .user("bob", &["--email", "bob@example.org"])
        // Opted in to mail without an address.
        .user("carol", &[])
        // Opted in, but the relay refuses the address.
        .user("dave", &["--email", "dave@refused.example"])
        .user(ADMIN, &["--admin"]);
    let server = Server::start_secure(&setup, &["--config", &config]);

    // An invalid address is refused with a clear message, and changes nothing.
    let out = cli_output_as(
        &server,
        "alice",
        &["user", "mod", "alice", "--email", "not an address"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an e-mail address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Users choose for themselves, through the admin API's user operation; others may not.
    for who in ["alice", "carol", "dave"] {
        cli_as(&server, who, &["user", "mod", who, "--notify", "mail"]);
    }
    let out = cli_output_as(
        &server,
        "bob",
        &["user", "mod", "alice", "--notify", "none"],
    );
    assert!(!out.status.success(), "bob changed alice's settings");
    let users: Value =
        serde_json::from_str(&cli_as(&server, ADMIN, &["user", "list", "--json"])).unwrap();
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["email"], "alice@example.org");
    assert_eq!(alice["notify"], "mail");
    let table = cli_as(&server, ADMIN, &["user", "list"]);
    assert!(
        table.contains("alice@example.org") && table.contains("EMAIL"),
        "{table}"
    );

    // alice's image builds: the mail names it, its digests, and the lines to paste.
    let manifest = push_buildable_as(&server, &Creds::of("alice"), "alice/tool", "1");
    let sif = ready_sif_digest(&server, "alice", "alice/tool:1");
    let mail = wait_for(DELIVERY, "alice's ready mail", || {
        sink.messages_to("alice@example.org").into_iter().next()
    });
    assert!(
        mail.contains("X-Envelope-TLS: yes"),
        "sent after STARTTLS:\n{mail}"
    );
    for needle in [
        "Subject: SIF ready: alice/tool:1",
        "From: \"HPC registry\" <registry@example.org>",
        "To: alice@example.org",
        manifest.as_str(),
        sif.as_str(),
        "hpc-registry run alice/tool:1 -- ",
        "apptainer pull oras://registry.example.org/alice/tool:1.sif",
    ] {
        assert!(mail.contains(needle), "{needle:?} missing in\n{mail}");
    }

    // A build that fails (the layer is no tar): the failure mail gives the reason.
    let broken = push_as(&server, &Creds::of("alice"), "alice/broken", "1");
    let r = settled(&server, "alice", "alice/broken:1");
    assert!(!r.status.is_success(), "{}", r.describe());
    let failure = wait_for(DELIVERY, "alice's failure mail", || {
        sink.messages_to("alice@example.org")
            .into_iter()
            .find(|m| m.contains("SIF build failed"))
    });
    assert!(
        failure.contains("Subject: SIF build failed: alice/broken:1"),
        "{failure}"
    );
    assert!(failure.contains(&broken.digest), "{failure}");
    assert!(failure.contains("Reason: "), "{failure}");

    // bob (not opted in), carol (no address) and dave (refused) push too.
    for who in ["bob", "carol", "dave"] {
        push_buildable_as(&server, &Creds::of(who), &format!("{who}/tool"), "1");
        ready_sif_digest(&server, who, &format!("{who}/tool:1"));
    }
    // dave's mail is retried, then given up on and listed with the relay's refusal.
    let failed = wait_for(DELIVERY, "dave's notification to fail for good", || {
        outbox(&server, Some("failed"))
            .into_iter()
            .find(|n| n["user"] == "dave")
    });
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("550"),
        "{failed}"
    );
    let listed = cli_as(&server, ADMIN, &["admin", "notifications", "--failed"]);
    assert!(
        listed.contains("dave") && listed.contains("dave/tool:1"),
        "{listed}"
    );
    // Nothing was ever queued for bob or carol, and no mail reached them.
    let all = outbox(&server, None);
    assert!(
        all.iter()
            .all(|n| n["user"] == "alice" || n["user"] == "dave"),
        "{all:?}"
    );
    assert_eq!(
        all.iter()
            .filter(|n| n["user"] == "alice" && n["state"] == "delivered")
            .count(),
        2,
        "{all:?}"
    );
    for mail in sink.messages() {
        assert!(
            mail.contains("X-Envelope-To: alice@example.org"),
            "only alice got mail:\n{mail}"
        );
    }
    // Plain users may not read the outbox.
    let out = cli_output_as(&server, "alice", &["admin", "notifications"]);
    assert!(!out.status.success());

    // The admin fixes dave's address and sends his notification again: it is delivered to the
    // address as it is now. Nobody else may, and a delivered one is not sent twice.
    let id = failed["id"].to_string();
    let out = cli_output_as(&server, "alice", &["admin", "notifications", "retry", &id]);
    assert!(!out.status.success(), "alice retried a notification");
    cli_as(
        &server,
        ADMIN,
        &["user", "mod", "dave", "--email", "dave@example.org"],
    );
    let said = cli_as(&server, ADMIN, &["admin", "notifications", "retry", &id]);
    assert!(said.contains("queued again"), "{said}");
    let mail = wait_for(DELIVERY, "dave's mail, sent again", || {
        sink.messages_to("dave@example.org").into_iter().next()
    });
    assert!(mail.contains("dave/tool"), "{mail}");
    let row = wait_for(DELIVERY, "dave's notification delivered", || {
        outbox(&server, Some("delivered"))
            .into_iter()
            .find(|n| n["id"] == failed["id"])
    });
    assert_eq!(row["address"], "dave@example.org", "{row}");
    assert_eq!(row["event_id"], failed["event_id"], "the same event: {row}");
    let out = cli_output_as(&server, ADMIN, &["admin", "notifications", "retry", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("delivered"), "{err}");
    let out = cli_output_as(
        &server,
        ADMIN,
        &["admin", "notifications", "retry", "999999"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no notification 999999"),
        "{err}"
    );
    // The relay credentials and the like never reach the log; the address does not either.
    let log = server.log();
    assert!(log.contains("notification delivered"), "{log}");
}

#[test]
fn webhooks_are_signed_retried_while_the_receiver_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "webhook-key-1234567890";
    let secret_file = dir.path().join("webhook.key");
    fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let events = dir.path().join("events");
    fs::create_dir(&events).unwrap();
    let port = free_port();
    let config = config_file(
        dir.path(),
        &format!(
            "[notifications]\nmax_attempts = 50\nretry_base_secs = 1\nretry_max_secs = 2\n\
             [notifications.webhook]\nurl = \"http://127.0.0.1:{port}/hooks/sif\"\n\
             secret_file = \"{}\"\ntimeout_secs = 5\n",
            secret_file.display()
        ),
    );
    let setup = Setup::new()
        .user("alice", &["--email", "alice@example.org"])
        .user("bob", &[])
        .user(ADMIN, &["--admin"]);
    let mut server = Server::start_secure(&setup, &["--config", &config]);
    // Both channels chosen; this site has no mail, so that half is skipped, never sent.
    cli_as(
        &server,
        "alice",
        &["user", "mod", "alice", "--notify", "both"],
    );

    // The receiver is down: the event is attempted, and retried.
    let manifest = push_buildable_as(&server, &Creds::of("alice"), "alice/tool", "1");
    let sif = ready_sif_digest(&server, "alice", "alice/tool:1");
    let pending = wait_for(DELIVERY, "a failed attempt of the webhook", || {
        outbox(&server, Some("pending"))
            .into_iter()
            .find(|n| n["channel"] == "webhook" && n["attempts"].as_i64() >= Some(2))
    });
    assert!(
        pending["last_error"].as_str().unwrap().contains("connect"),
        "{pending}"
    );
    let skipped = wait_for(DELIVERY, "the skipped mail", || {
        outbox(&server, Some("skipped")).into_iter().next()
    });
    assert_eq!(skipped["channel"], "mail");

    // The registry restarts (kill -9), then the receiver comes up: the event arrives, once.
    server.restart_secure();
    let receiver = WebhookReceiver::start(port, &secret_file, &events);
    let got = wait_for(DELIVERY, "the webhook event", || {
        receiver.events().into_iter().next()
    });
    let event = &got["event"];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(
        event["id"], pending["event_id"],
        "the outbox row's stable id"
    );
    assert_eq!(event["type"], "org.hpc-registry.sif.ready");
    assert_eq!(event["subject"], "alice/tool:1");
    assert_eq!(event["datacontenttype"], "application/json");
    assert!(event["source"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(event["data"]["manifest_digest"], manifest.as_str());
    assert_eq!(event["data"]["sif_digest"], sif.as_str());
    assert!(event["data"]["sif_size"].as_i64().unwrap() > 0);
    assert!(got["content_type"]
        .as_str()
        .unwrap()
        .starts_with("application/cloudevents+json"));
    assert!(got["signature"].as_str().unwrap().starts_with("sha256="));
    wait_for(DELIVERY, "the webhook row to be delivered", || {
        outbox(&server, Some("delivered"))
            .into_iter()
            .find(|n| n["event_id"] == pending["event_id"])
    });
    assert_eq!(receiver.rejected(), 0, "every request verified");
    assert_eq!(receiver.duplicates(), 0, "delivered once");

    // A user who did not opt in: nothing is sent for their image.
    push_buildable_as(&server, &Creds::of("bob"), "bob/tool", "1");
    ready_sif_digest(&server, "bob", "bob/tool:1");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.events().len(), 1, "{:?}", receiver.events());
    assert!(outbox(&server, None).iter().all(|n| n["user"] == "alice"));
    // The key never reaches the log.
    assert!(!server.log().contains(secret));
}
