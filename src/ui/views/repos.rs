//! The home page (the caller's repositories) and a repository's tags.

use maud::{html, Markup};

use super::{bytes, digest, page, time, Nav};
use crate::meta::TagDetail;
use crate::registry::names::RepositoryName;
use crate::ui::data::{summarize, Listing};

fn repo_list(id: &str, title: &str, repos: &[String], empty: &str) -> Markup {
    html! {
        section aria-labelledby=(id) {
            h2 id=(id) { (title) }
            @if repos.is_empty() {
                p class="muted" { (empty) }
            } @else {
                ul class="repos" {
                    @for r in repos {
                        li { a href={ "/ui/r/" (r) } { (r) } }
                    }
                }
            }
        }
    }
}

pub fn home(nav: &Nav, listing: &Listing) -> Markup {
    page(
        "Images",
        Some(nav),
        html! {
            h1 { "Images" }
            (repo_list("mine", "Your repositories", &listing.mine,
                "None yet: push an image to your namespace, e.g. docker push HOST/you/tool:1."))
            (repo_list("groups", "Your groups' repositories", &listing.groups,
                "No repositories in your groups' namespaces."))
            @if !listing.others.is_empty() {
                (repo_list("others", "Other repositories you may read", &listing.others, ""))
            }
        },
    )
}

pub fn repository(nav: &Nav, repo: &RepositoryName, tags: &[TagDetail]) -> Markup {
    page(
        repo.as_str(),
        Some(nav),
        html! {
            p class="crumbs" { a href="/ui/" { "Images" } " / " (repo.as_str()) }
            h1 { (repo.as_str()) }
            @if tags.is_empty() {
                p class="muted" { "No tags." }
            } @else {
                table class="tags" {
                    caption { "Tags of " (repo.as_str()) }
                    thead { tr {
                        th scope="col" { "Tag" }
                        th scope="col" { "Digest" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Size" }
                        th scope="col" { "Pushed" }
                    } }
                    tbody {
                        @for t in tags {
                            @let s = summarize(&t.media_type, &t.content);
                            tr {
                                td { a href={ "/ui/i/" (repo.as_str()) ":" (t.tag) } { (t.tag) } }
                                td { (digest(&t.digest)) }
                                td { (s.kind) }
                                td { (bytes(s.size)) }
                                td { (time(t.pushed_at)) }
                            }
                        }
                    }
                }
            }
        },
    )
}
