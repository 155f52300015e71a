//! The HTML of the UI: maud templates (checked at compile time, every value escaped unless
//! marked otherwise), one module per page family, the page chrome here.

pub mod admin;
pub mod image;
pub mod lint;
pub mod login;
pub mod repos;
pub mod script;
pub mod tokens;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

/// Who is logged in, for the page chrome.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    pub admin: bool,
    /// The session's CSRF token (the logout form carries it).
    pub csrf: String,
}

/// A whole page: head, navigation (when logged in), main content.
pub fn page(title: &str, nav: Option<&Nav>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hpc-registry" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                link rel="icon" href="/ui/assets/icon.svg" type="image/svg+xml";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/ui/" {
                        img src="/ui/assets/icon.svg" alt="" width="24" height="24";
                        " hpc-registry"
                    }
                    @if let Some(nav) = nav {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/ui/" { "Images" } }
                                li { a href="/ui/script" { "Batch script" } }
                                li { a href="/ui/lint" { "Lint" } }
                                li { a href="/ui/tokens" { "Tokens" } }
                                @if nav.admin {
                                    li { a href="/ui/admin/" { "Admin" } }
                                }
                            }
                        }
                        form class="logout" method="post" action="/ui/logout" {
                            (csrf_field(&nav.csrf))
                            span class="who" { "Signed in as " strong { (nav.user) } }
                            " "
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { (main) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(super::guard::CSRF_FIELD) value=(token); }
}

/// A rendered page as a response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that says what went wrong (no navigation: it may be answered before the session is
/// known).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            None,
            html! {
                h1 { (status.as_u16()) " " (title) }
                p class="error" role="alert" { (message) }
                p { a href="/ui/" { "Back to your images" } }
            },
        ),
    )
}

/// `1.5 GiB`-style sizes.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A Unix time as RFC 3339 (UTC), in a `<time>` element.
pub fn time(secs: i64) -> Markup {
    let text = crate::timefmt::rfc3339(secs);
    html! { time datetime=(text) { (text.replace('T', " ").trim_end_matches('Z')) " UTC" } }
}

/// A digest shortened for tables, the whole one in its title.
pub fn digest(d: &str) -> Markup {
    let short = d
        .split_once(':')
        .map(|(alg, hex)| format!("{alg}:{}", hex.chars().take(12).collect::<String>()))
        .unwrap_or_else(|| d.to_owned());
    html! { code title=(d) { (short) } }
}

/// A read-only line with a copy button (ui.js copies the input's value).
pub fn copy_line(id: &str, label: &str, value: &str) -> Markup {
    html! {
        div class="copy" {
            label for=(id) { (label) }
            div class="copy-row" {
                input id=(id) type="text" readonly value=(value);
                button type="button" class="copy-button" data-copy=(id) { "Copy" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_escaping() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        let p = page("<x>", None, html! { p { ("<script>") } }).into_string();
        assert!(p.contains("&lt;script&gt;") && !p.contains("<script>alert"));
        assert!(!p.contains("<x>"));
    }
}
