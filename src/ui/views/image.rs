//! The image page: platforms, layers, the SIF's state (updated live by ui.js from
//! `/ui/api/status/…`), and the three copy lines.

use maud::{html, Markup};

use super::{bytes, copy_line, digest, page, time, Nav};
use crate::ui::data::{CopyLines, ImagePage, SifState};

/// The SIF state block; ui.js re-renders the same fields from the JSON.
pub fn sif_state(s: &SifState) -> Markup {
    let status = s.status.as_ref();
    html! {
        dl class="sif-state" {
            dt { "State" }
            dd { span id="sif-state" class={ "state state-" (s.state) } { (s.state) } }
            @if let Some(p) = status.and_then(|s| s.position) {
                dt { "Queue position" } dd id="sif-position" { (p + 1) }
            }
            @if let Some(p) = status.and_then(|s| s.progress.as_ref()) {
                dt { "Phase" } dd id="sif-phase" { (p.phase) }
                dt { "Progress" }
                dd {
                    @let pct = (p.bytes_done * 100).checked_div(p.bytes_expected).unwrap_or(0).min(100);
                    progress id="sif-progress" max="100" value=(pct) { (pct) "%" }
                    " " (p.layers_done) "/" (p.layers_total) " layers, "
                    (bytes(p.bytes_done as i64)) " of " (bytes(p.bytes_expected as i64))
                    @if let Some(eta) = p.eta_secs { ", about " (eta) " s left" }
                }
            }
            @if let Some(d) = status.and_then(|s| s.sif.as_deref()) {
                dt { "SIF digest" } dd { code id="sif-digest" { (d) } }
            }
            @if let Some(size) = s.sif_size {
                dt { "SIF size" } dd id="sif-size" { (bytes(size)) }
            }
            @if let Some(f) = status.and_then(|s| s.failure.as_deref()) {
                dt { "Reason" } dd id="sif-failure" class="error" { (f) }
            }
            @if let Some(r) = &s.reason {
                dt { "Why there is no SIF" } dd { (r) }
            }
        }
        @if let Some(log) = &s.log_tail {
            details open {
                summary { "Build log (end)" }
                pre id="sif-log" tabindex="0" { (log) }
            }
        }
    }
}

pub fn image(nav: &Nav, p: &ImagePage, lines: &CopyLines) -> Markup {
    let r = p.image.repo.as_str();
    let live = matches!(p.sif.state.as_str(), "queued" | "building");
    page(
        &p.image.text(),
        Some(nav),
        html! {
            p class="crumbs" {
                a href="/ui/" { "Images" } " / " a href={ "/ui/r/" (r) } { (r) } " / " (p.image.tag.as_str())
            }
            h1 { (p.image.text()) }
            dl class="facts" {
                dt { "Digest" } dd { code { (p.digest) } }
                dt { "Media type" } dd { code { (p.media_type) } }
                dt { "Kind" } dd { (p.summary.kind) }
                dt { "Size" } dd { (bytes(p.summary.size)) }
                dt { "Pushed" } dd { (time(p.pushed_at)) }
                dt { "Platforms" } dd { (p.summary.platforms.join(", ")) }
            }
            section aria-labelledby="sif-h" class="card" {
                h2 id="sif-h" { "SIF" }
                div id="sif" data-status-url={ "/ui/api/status/" (p.image.text()) }
                    data-live=(if live { "true" } else { "false" }) aria-live="polite" {
                    (sif_state(&p.sif))
                }
            }
            section aria-labelledby="use-h" class="card" {
                h2 id="use-h" { "Use it" }
                (copy_line("copy-run", "In a batch script (hpc-registry run)", &lines.run))
                (copy_line("copy-apptainer", "With Apptainer (ORAS)", &lines.apptainer))
                (copy_line("copy-pyxis", "With Slurm and pyxis", &lines.pyxis))
                p { a href={ "/ui/script?image=" (p.image.text()) } { "Write a batch script for this image" } }
            }
            @if !p.summary.layers.is_empty() {
                section aria-labelledby="layers-h" {
                    h2 id="layers-h" { "Layers" }
                    table {
                        thead { tr {
                            th scope="col" { "#" } th scope="col" { "Digest" }
                            th scope="col" { "Media type" } th scope="col" { "Size" }
                        } }
                        tbody {
                            @for (i, l) in p.summary.layers.iter().enumerate() {
                                tr {
                                    td { (i + 1) } td { (digest(&l.digest)) }
                                    td { code { (l.media_type) } } td { (bytes(l.size)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
