//! `hpc-registry admin notifications [--failed | --state S] [--json]`: the notification outbox
//! of a running server, through its admin API (`/admin/notifications`); `admin notifications
//! retry ID` sends a failed or skipped one again (`POST /admin/notifications/ID/retry`).

use axum::http::Method;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::remote::ServerTarget;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub command: Option<NotificationsCommand>,
    /// Only notifications given up on after their last attempt (same as `--state failed`).
    #[arg(long, conflicts_with = "state")]
    pub failed: bool,
    /// Only notifications in this state: pending, delivered, failed or skipped.
    #[arg(long)]
    pub state: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: ServerTarget,
}

#[derive(Subcommand, Debug)]
pub enum NotificationsCommand {
    /// Send a failed or skipped notification again, once the relay, the receiver or the
    /// user's address is fixed (a mail goes to the user's address as it is now).
    Retry {
        /// The notification's ID (the first column of `admin notifications`).
        id: i64,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn run(args: NotificationsArgs) -> anyhow::Result<()> {
    if let Some(NotificationsCommand::Retry { id, target }) = args.command {
        let v = target.require()?.call(
            Method::POST,
            &format!("/admin/notifications/{id}/retry"),
            None,
        )?;
        let n = &v["notification"];
        println!(
            "notification {id} ({} to {}) queued again; `admin notifications` shows when it is delivered",
            n["channel"].as_str().unwrap_or("-"),
            n["user"].as_str().unwrap_or("-")
        );
        return Ok(());
    }
    let client = args.target.require()?;
    let state = if args.failed {
        Some("failed".to_owned())
    } else {
        args.state
    };
    let path = match &state {
        Some(s) => format!("/admin/notifications?state={}", crate::urlcode::encode(s)),
        None => "/admin/notifications".to_owned(),
    };
    let v = client.json(Method::GET, &path, None, "GET")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v["notifications"].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let image = |n: &Value| match n["tag"].as_str() {
        Some(t) => format!("{}:{t}", text(&n["repository"])),
        None => format!("{}@{}", text(&n["repository"]), text(&n["manifest_digest"])),
    };
    super::output::table(
        &[
            "ID",
            "STATE",
            "CHANNEL",
            "EVENT",
            "USER",
            "IMAGE",
            "ATTEMPTS",
            "CREATED",
            "LAST ERROR",
        ],
        rows.iter().map(|n| {
            vec![
                n["id"].to_string(),
                text(&n["state"]),
                text(&n["channel"]),
                text(&n["event"]),
                text(&n["user"]),
                image(n),
                n["attempts"].to_string(),
                n["created_at"]
                    .as_i64()
                    .map(crate::timefmt::rfc3339)
                    .unwrap_or_else(|| "-".into()),
                text(&n["last_error"]),
            ]
        }),
    );
    Ok(())
}
