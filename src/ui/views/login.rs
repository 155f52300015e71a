//! The login form.

use maud::{html, Markup};

use super::page;

/// The login page; `error` says why the last attempt failed.
pub fn login(login_token: &str, user: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            p { "Use your registry password, or an access token (" code { "hpcr_…" } ")." }
            @if let Some(e) = error {
                p class="error" role="alert" id="login-error" { (e) }
            }
            form class="card narrow" method="post" action="/ui/login" {
                input type="hidden" name="login_csrf" value=(login_token);
                p {
                    label for="user" { "User name" }
                    input id="user" name="user" type="text" autocomplete="username" value=(user)
                        autofocus;
                }
                p {
                    label for="secret" { "Password or access token" }
                    input id="secret" name="secret" type="password"
                        autocomplete="current-password" required;
                }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}
