//! `hpc-registry user|group|token ...`: identity management from the command line.
//!
//! Two modes, the same operations ([`crate::auth::manage::Op`]):
//! * **online** (`--server URL` or `HPC_REGISTRY_SERVER`): through the running server's admin API,
//!   authenticated with `HPC_REGISTRY_USER` + `HPC_REGISTRY_PASSWORD`, or `HPC_REGISTRY_TOKEN`
//!   (an access token). Users can change their own password and tokens this way.
//! * **offline** (default): directly on the data directory while no server runs. It takes the
//!   data-directory lock, so it refuses (naming the server's URL) while a server holds it. Whoever
//!   can write the data directory is trusted like an admin.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::output::{list, yes};
use super::prompt::read_password;
use super::target::{Backend, Target};
use crate::auth::manage::{
    CreatedToken, GroupInfo, ImportReport, MemberInfo, Op, TokenInfo, UserInfo,
};
use crate::auth::pat::TokenScope;
use crate::auth::rfc3339;
use crate::meta::NotifyChannels;

/// The identity-management commands (flattened into the binary's subcommands).
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Manage users: add, mod, del, passwd, list, import-htpasswd.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Manage groups and their members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Manage personal access tokens (for CI and batch jobs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (password prompted for, or read from stdin).
    Add {
        name: String,
        /// POSIX uid, for MUNGE credentials from cluster nodes.
        #[arg(long)]
        uid: Option<i64>,
        /// Administrator: may do everything.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// No password: the user authenticates with MUNGE or access tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
        /// E-mail address for SIF ready/failed notices (they also need `user mod --notify`).
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
    },
    /// Change a user's notification settings (users may change their own).
    Mod {
        name: String,
        /// E-mail address for SIF ready/failed notices.
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
        /// Remove the e-mail address.
        #[arg(long, conflicts_with = "email")]
        no_email: bool,
        /// How to be told when a SIF of an image you pushed is ready or failed: mail,
        /// webhook, both or none (the default: nothing).
        #[arg(long, value_name = "CHANNELS", value_parser = parse_notify)]
        notify: Option<NotifyChannels>,
    },
    /// Delete a user (with their tokens and memberships; their repositories stay).
    Del { name: String },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add the bcrypt entries of an Apache htpasswd file as users (`htpasswd -B`).
    ImportHtpasswd { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group; its members share the namespace `<group>/…`.
    Add { name: String },
    /// Delete a group (its repositories stay).
    Del { name: String },
    /// List groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a group's members, after adding or removing some.
    Members {
        group: String,
        /// Add (or make read-write) these users.
        #[arg(long, value_name = "USER")]
        add: Vec<String>,
        /// Add (or make read-only) these users: they pull but never push.
        #[arg(long, value_name = "USER")]
        add_read_only: Vec<String>,
        #[arg(long, value_name = "USER")]
        remove: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once, on standard output.
    Create {
        /// Whose token [default: the logged-in user; required offline].
        #[arg(long)]
        user: Option<String>,
        /// read or read-write.
        #[arg(long, default_value = "read-write", value_parser = parse_scope)]
        scope: TokenScope,
        /// Days until it expires; 0: never [default: 90].
        #[arg(long)]
        expires_days: Option<u32>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Whose tokens [default: the logged-in user's; offline: everybody's].
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

fn parse_notify(s: &str) -> Result<NotifyChannels, String> {
    crate::auth::contact::parse_channels(s).map_err(|e| e.to_string())
}

fn parse_scope(s: &str) -> Result<TokenScope, String> {
    TokenScope::parse(s).ok_or_else(|| format!("{s:?} is not one of read, read-write"))
}

/// Runs one command.
pub fn run(command: IdentityCommand) -> anyhow::Result<()> {
    let (target, backend_command) = match command {
        IdentityCommand::User { command, target } => (target, Identity::User(command)),
        IdentityCommand::Group { command, target } => (target, Identity::Group(command)),
        IdentityCommand::Token { command, target } => (target, Identity::Token(command)),
    };
    let backend = Backend::open(&target)?;
    match backend_command {
        Identity::User(command) => user(&backend, command),
        Identity::Group(command) => group(&backend, command),
        Identity::Token(command) => token(&backend, command),
    }
}

/// The commands that run [`Op`]s.
enum Identity {
    User(UserCommand),
    Group(GroupCommand),
    Token(TokenCommand),
}

fn user(backend: &Backend, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            uid,
            admin,
            password_stdin,
            no_password,
            email,
        } => {
            // Checked before the user exists, so a typo does not leave a half-made user.
            let email = email
                .as_deref()
                .map(crate::auth::contact::check_email)
                .transpose()?;
            let password = if no_password {
                None
            } else {
                Some(read_password(
                    password_stdin,
                    &format!("password for {name}"),
                )?)
            };
            backend.run(Op::AddUser {
                name: name.clone(),
                uid,
                admin,
                password,
            })?;
            if email.is_some() {
                backend.run(Op::ModifyUser {
                    name: name.clone(),
                    email: email.clone(),
                    clear_email: false,
                    notify: None,
                })?;
            }
            eprintln!("added user {name}{}", if admin { " (admin)" } else { "" });
        }
        UserCommand::Mod {
            name,
            email,
            no_email,
            notify,
        } => {
            if email.is_none() && !no_email && notify.is_none() {
                anyhow::bail!("user mod {name}: nothing to change (--email, --no-email, --notify)");
            }
            let v = backend.run(Op::ModifyUser {
                name: name.clone(),
                email,
                clear_email: no_email,
                notify,
            })?;
            let u: UserInfo = serde_json::from_value(v)?;
            eprintln!(
                "user {name}: e-mail {}, notified by {}",
                u.email.as_deref().unwrap_or("none"),
                u.notify.as_str()
            );
        }
        UserCommand::Del { name } => {
            backend.run(Op::DeleteUser { name: name.clone() })?;
            eprintln!("deleted user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &format!("new password for {name}"))?;
            backend.run(Op::SetPassword {
                name: name.clone(),
                password,
            })?;
            eprintln!("password of {name} changed");
        }
        UserCommand::List { json } => {
            let header = [
                "NAME", "UID", "ADMIN", "PASSWORD", "GROUPS", "EMAIL", "NOTIFY", "CREATED",
            ];
            list(backend.run(Op::ListUsers)?, json, &header, |u: UserInfo| {
                vec![
                    u.name,
                    u.uid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                    yes(u.admin),
                    yes(u.password),
                    if u.groups.is_empty() {
                        "-".into()
                    } else {
                        u.groups.join(",")
                    },
                    u.email.unwrap_or_else(|| "-".into()),
                    u.notify.as_str().to_owned(),
                    rfc3339(u.created_at),
                ]
            })?;
        }
        UserCommand::ImportHtpasswd { file } => {
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let report: ImportReport =
                serde_json::from_value(backend.run(Op::ImportHtpasswd { content })?)?;
            for name in &report.added {
                println!("added {name}");
            }
            for (what, why) in &report.skipped {
                eprintln!("skipped {what}: {why}");
            }
            eprintln!(
                "{} users added, {} entries skipped",
                report.added.len(),
                report.skipped.len()
            );
        }
    }
    Ok(())
}

fn group(backend: &Backend, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Add { name } => {
            backend.run(Op::AddGroup { name: name.clone() })?;
            eprintln!("added group {name}");
        }
        GroupCommand::Del { name } => {
            backend.run(Op::DeleteGroup { name: name.clone() })?;
            eprintln!("deleted group {name}");
        }
        GroupCommand::List { json } => {
            let header = ["NAME", "MEMBERS", "CREATED"];
            list(
                backend.run(Op::ListGroups)?,
                json,
                &header,
                |g: GroupInfo| vec![g.name, g.members.to_string(), rfc3339(g.created_at)],
            )?;
        }
        GroupCommand::Members {
            group,
            add,
            add_read_only,
            remove,
            json,
        } => {
            for (users, read_only) in [(add, false), (add_read_only, true)] {
                for user in users {
                    backend.run(Op::SetMember {
                        group: group.clone(),
                        user,
                        read_only,
                    })?;
                }
            }
            for user in remove {
                backend.run(Op::RemoveMember {
                    group: group.clone(),
                    user,
                })?;
            }
            let v = backend.run(Op::GroupMembers { group })?;
            list(v, json, &["USER", "ROLE", "ADDED"], |m: MemberInfo| {
                let role = if m.read_only {
                    "read-only"
                } else {
                    "read-write"
                };
                vec![m.user, role.to_owned(), rfc3339(m.added_at)]
            })?;
        }
    }
    Ok(())
}

fn token(backend: &Backend, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            user,
            scope,
            expires_days,
            description,
        } => {
            let created: CreatedToken = serde_json::from_value(backend.run(Op::CreateToken {
                user,
                scope,
                expires_days,
                description,
            })?)?;
            println!("{}", created.token);
            eprintln!(
                "token {} for {} ({}), {}: store it now, it is never shown again",
                created.info.id,
                created.info.user,
                created.info.scope,
                created
                    .info
                    .expires_at
                    .map(|e| format!("expires {}", rfc3339(e)))
                    .unwrap_or_else(|| "never expires".into())
            );
        }
        TokenCommand::List { user, json } => {
            let header = [
                "ID",
                "USER",
                "SCOPE",
                "CREATED",
                "EXPIRES",
                "LAST USED",
                "DESCRIPTION",
            ];
            let date = |d: Option<i64>, none: &str| d.map(rfc3339).unwrap_or_else(|| none.into());
            list(
                backend.run(Op::ListTokens { user })?,
                json,
                &header,
                |t: TokenInfo| {
                    vec![
                        t.id,
                        t.user,
                        t.scope,
                        rfc3339(t.created_at),
                        date(t.expires_at, "never"),
                        date(t.last_used_at, "-"),
                        t.description,
                    ]
                },
            )?;
        }
        TokenCommand::Revoke { id } => {
            backend.run(Op::RevokeToken { id: id.clone() })?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}
