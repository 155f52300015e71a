//! The access-token page.

use maud::{html, Markup};

use super::{copy_line, csrf_field, page, time, Nav};
use crate::auth::manage::{CreatedToken, TokenInfo};

pub fn tokens(
    nav: &Nav,
    tokens: &[TokenInfo],
    created: Option<&CreatedToken>,
    error: Option<&str>,
) -> Markup {
    page(
        "Access tokens",
        Some(nav),
        html! {
            h1 { "Access tokens" }
            p { "Tokens log in CI jobs and scripts (" code { "docker login -u USER" } " with the token as password). A read token only pulls." }
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            @if let Some(c) = created {
                section class="card created" aria-labelledby="new-h" {
                    h2 id="new-h" { "New token " code { (c.info.id) } }
                    p { strong { "Copy it now: it is shown only once." } }
                    (copy_line("new-token", "Token", &c.token))
                }
            }
            section aria-labelledby="create-h" class="card" {
                h2 id="create-h" { "Create a token" }
                form method="post" action="/ui/tokens" {
                    (csrf_field(&nav.csrf))
                    p {
                        label for="description" { "Description" }
                        input id="description" name="description" type="text" maxlength="200"
                            placeholder="CI of my project";
                    }
                    p {
                        label for="scope" { "Scope" }
                        select id="scope" name="scope" {
                            option value="read" { "read (pull only)" }
                            option value="read-write" selected { "read-write (pull and push)" }
                        }
                    }
                    p {
                        label for="expires_days" { "Expires after (days, 0 = never)" }
                        input id="expires_days" name="expires_days" type="number" min="0"
                            max="3650" value="90";
                    }
                    p { button type="submit" { "Create token" } }
                }
            }
            section aria-labelledby="list-h" {
                h2 id="list-h" { "Your tokens" }
                @if tokens.is_empty() {
                    p class="muted" { "No tokens." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "Id" } th scope="col" { "Description" }
                            th scope="col" { "Scope" } th scope="col" { "Created" }
                            th scope="col" { "Expires" } th scope="col" { "Last used" }
                            th scope="col" { span class="sr-only" { "Revoke" } }
                        } }
                        tbody {
                            @for t in tokens {
                                tr {
                                    td { code { (t.id) } }
                                    td { (t.description) }
                                    td { (t.scope) }
                                    td { (time(t.created_at)) }
                                    td { @if let Some(e) = t.expires_at { (time(e)) } @else { "never" } }
                                    td { @if let Some(u) = t.last_used_at { (time(u)) } @else { "never" } }
                                    td {
                                        form method="post" action="/ui/tokens/revoke" {
                                            (csrf_field(&nav.csrf))
                                            input type="hidden" name="id" value=(t.id);
                                            button type="submit" class="danger"
                                                aria-label={ "Revoke token " (t.id) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
