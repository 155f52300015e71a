//! The admin pages.

use maud::{html, Markup};

use super::{bytes, csrf_field, digest, page, time, Nav};
use crate::audit::query::Params;
use crate::audit::Record;
use crate::auth::manage::{GroupInfo, MemberInfo, UserInfo};
use crate::farm::queue::JobSummary;
use crate::quota::UsageReport;
use crate::ui::admin::{Activity, Counters};

fn admin_nav() -> Markup {
    html! {
        nav aria-label="Admin" class="subnav" {
            ul {
                li { a href="/ui/admin/" { "Overview" } }
                li { a href="/ui/admin/users" { "Users and groups" } }
                li { a href="/ui/admin/usage" { "Usage and quotas" } }
                li { a href="/ui/admin/builds" { "Build queue" } }
                li { a href="/ui/admin/audit" { "Audit" } }
            }
        }
    }
}

fn activity_row(label: &str, key: &str, a: &Activity) -> Markup {
    html! {
        tr {
            th scope="row" { (label) }
            td data-counter={ (key) ".pushes" } { (a.pushes) }
            td data-counter={ (key) ".fetches" } { (a.fetches) }
            td data-counter={ (key) ".builds_ready" } { (a.builds_ready) }
            td data-counter={ (key) ".builds_failed" } { (a.builds_failed) }
        }
    }
}

pub fn overview(nav: &Nav, c: &Counters) -> Markup {
    page(
        "Admin",
        Some(nav),
        html! {
            h1 { "Admin" }
            (admin_nav())
            section aria-labelledby="act-h" class="card" id="counters" data-counters-url="/ui/api/counters" {
                h2 id="act-h" { "Activity" }
                table {
                    caption { "From the audit trail and the build queue; updated every few seconds" }
                    thead { tr {
                        th scope="col" { "Window" } th scope="col" { "Pushes" }
                        th scope="col" { "Fetches" } th scope="col" { "SIFs built" }
                        th scope="col" { "Builds failed" }
                    } }
                    tbody {
                        (activity_row("Last hour", "last_hour", &c.last_hour))
                        (activity_row("Last 24 hours", "last_day", &c.last_day))
                    }
                }
                p {
                    "Build queue now: "
                    @for (state, n) in &c.queue { (state) " " strong { (n) } "; " }
                    "UI sessions open: " strong data-counter="sessions" { (c.sessions) }
                }
            }
        },
    )
}

pub fn users(
    nav: &Nav,
    users: &[UserInfo],
    groups: &[GroupInfo],
    members: &[Vec<MemberInfo>],
) -> Markup {
    page(
        "Users and groups",
        Some(nav),
        html! {
            h1 { "Users and groups" }
            (admin_nav())
            p class="muted" { "Change them with " code { "hpc-registry user|group" } "." }
            table {
                caption { "Users" }
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "uid" } th scope="col" { "Admin" }
                    th scope="col" { "Password" } th scope="col" { "Groups" } th scope="col" { "Created" }
                } }
                tbody {
                    @for u in users {
                        tr {
                            td { (u.name) }
                            td { @if let Some(uid) = u.uid { (uid) } }
                            td { @if u.admin { "yes" } @else { "no" } }
                            td { @if u.password { "set" } @else { "none" } }
                            td { (u.groups.join(", ")) }
                            td { (time(u.created_at)) }
                        }
                    }
                }
            }
            table {
                caption { "Groups" }
                thead { tr { th scope="col" { "Group" } th scope="col" { "Members" } th scope="col" { "Created" } } }
                tbody {
                    @for (g, m) in groups.iter().zip(members) {
                        tr {
                            td { (g.name) }
                            td {
                                @for (i, member) in m.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (member.user) @if member.read_only { " (read-only)" }
                                }
                            }
                            td { (time(g.created_at)) }
                        }
                    }
                }
            }
        },
    )
}

pub fn usage(nav: &Nav, reports: &[UsageReport]) -> Markup {
    page(
        "Usage and quotas",
        Some(nav),
        html! {
            h1 { "Usage and quotas" }
            (admin_nav())
            table {
                caption { "Per namespace; set limits with " code { "hpc-registry admin quota" } }
                thead { tr {
                    th scope="col" { "Namespace" } th scope="col" { "Repositories" }
                    th scope="col" { "Layers" } th scope="col" { "SIFs" } th scope="col" { "Manifests" }
                    th scope="col" { "Total" } th scope="col" { "Quota" } th scope="col" { "Used" }
                } }
                tbody {
                    @for r in reports {
                        tr {
                            td { (r.usage.namespace) }
                            td { (r.usage.repositories) }
                            td { (bytes(r.usage.blob_bytes)) }
                            td { (bytes(r.usage.sif_bytes)) }
                            td { (bytes(r.usage.manifest_bytes)) }
                            td { (bytes(r.total_bytes)) }
                            td {
                                @match r.quota_bytes {
                                    Some(q) => { (bytes(q as i64)) " (" (source(r)) ")" }
                                    None => { "unlimited" }
                                }
                            }
                            td {
                                @if let Some(q) = r.quota_bytes.filter(|q| *q > 0) {
                                    @let pct = (r.total_bytes.max(0) as u64 * 100 / q).min(100);
                                    meter min="0" max="100" value=(pct) { (pct) "%" } " " (pct) "%"
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn source(r: &UsageReport) -> String {
    serde_json::to_value(r.quota_source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn builds(nav: &Nav, jobs: &[JobSummary], state: Option<&str>, notice: Option<&str>) -> Markup {
    page(
        "Build queue",
        Some(nav),
        html! {
            h1 { "Build queue" }
            (admin_nav())
            @if let Some(n) = notice { p class="notice" role="status" id="notice" { (n) } }
            form method="get" action="/ui/admin/builds" class="inline" {
                label for="state" { "Show" }
                select id="state" name="state" {
                    @for (value, label) in [("", "all"), ("queued", "queued"), ("building", "building"), ("failed", "failed"), ("ready", "ready")] {
                        option value=(value) selected[state.unwrap_or("") == value] { (label) }
                    }
                }
                button type="submit" { "Filter" }
            }
            table id="jobs" {
                caption { "Newest first" }
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Repository" } th scope="col" { "Image" }
                    th scope="col" { "Platform" } th scope="col" { "State" } th scope="col" { "Attempts" }
                    th scope="col" { "Builder / reason" } th scope="col" { "Queued" }
                    th scope="col" { span class="sr-only" { "Actions" } }
                } }
                tbody {
                    @for j in jobs {
                        tr id={ "job-" (j.id) } {
                            td { (j.id) }
                            td { (j.repository) }
                            td { (digest(&j.status.image)) }
                            td { (j.status.platform) }
                            td { span class={ "state state-" (j.status.state) } { (j.status.state) } }
                            td { (j.status.attempts) }
                            td {
                                @if let Some(f) = &j.status.failure { span class="error" { (f) } }
                                @else if let Some(b) = &j.status.builder { (b) }
                            }
                            td { (time(j.status.queued_at)) }
                            td {
                                @if j.status.state == "failed" {
                                    (action_form(nav, j.id, "retry", "Retry", state))
                                }
                                @if j.status.state == "queued" || j.status.state == "building" {
                                    (action_form(nav, j.id, "cancel", "Cancel", state))
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn action_form(nav: &Nav, id: i64, action: &str, label: &str, state: Option<&str>) -> Markup {
    html! {
        form method="post" action="/ui/admin/builds/act" {
            (csrf_field(&nav.csrf))
            input type="hidden" name="id" value=(id);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="state" value=(state.unwrap_or(""));
            button type="submit" aria-label={ (label) " job " (id) } { (label) }
        }
    }
}

pub fn audit(nav: &Nav, p: &Params, records: &[Record], error: Option<&str>) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    page(
        "Audit",
        Some(nav),
        html! {
            h1 { "Audit trail" }
            (admin_nav())
            form method="get" action="/ui/admin/audit" class="filters" {
                @for (name, label, value, hint) in [
                    ("user", "User", v(&p.user), "alice"),
                    ("repo", "Repository", v(&p.repo), "alice/tool"),
                    ("action", "Action (or prefix)", v(&p.action), "auth"),
                    ("since", "Since", v(&p.since), "24h or 2026-01-01"),
                    ("until", "Until", v(&p.until), ""),
                    ("limit", "Limit", v(&p.limit), "200"),
                ] {
                    p {
                        label for={ "f-" (name) } { (label) }
                        input id={ "f-" (name) } name=(name) type="text" value=(value) placeholder=(hint);
                    }
                }
                p { button type="submit" { "Search" } }
            }
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            table id="audit" {
                caption { (records.len()) " records, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "User" } th scope="col" { "Action" }
                    th scope="col" { "Outcome" } th scope="col" { "Object" } th scope="col" { "Client" }
                    th scope="col" { "Detail" }
                } }
                tbody {
                    @for r in records {
                        tr {
                            td { (r.time) }
                            td { (r.user.as_deref().unwrap_or("-")) }
                            td { code { (r.action) } }
                            td { (r.outcome) }
                            td {
                                (r.repository.as_deref().unwrap_or(""))
                                @if let Some(x) = &r.reference { " " (x) }
                            }
                            td { (r.client.as_deref().unwrap_or("")) }
                            td { (r.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}
