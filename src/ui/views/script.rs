//! The generator page.

use maud::{html, Markup};

use super::{csrf_field, page, Nav};
use crate::jobscript::Template;
use crate::ui::script::{Choice, Filled};

fn text_field(id: &str, label: &str, value: &str, hint: &str) -> Markup {
    html! {
        p {
            label for=(id) { (label) }
            input id=(id) name=(id) type="text" value=(value) placeholder=(hint);
        }
    }
}

fn check(id: &str, label: &str, on: bool) -> Markup {
    html! {
        p class="check" {
            input id=(id) name=(id) type="checkbox" value="on" checked[on];
            " " label for=(id) style="display:inline" { (label) }
        }
    }
}

pub fn generator(
    nav: &Nav,
    images: &[Choice],
    templates: &[Template],
    f: &Filled,
    script: Option<&str>,
    error: Option<&str>,
) -> Markup {
    page(
        "Batch script",
        Some(nav),
        html! {
            h1 { "Batch script generator" }
            p { "A Slurm batch script that runs your image with " code { "hpc-registry run" } " on the compute node." }
            @if let Some(e) = error { p class="error" role="alert" id="error" { (e) } }
            form method="post" action="/ui/script" id="generator" class="card" {
                (csrf_field(&nav.csrf))
                p {
                    label for="image" { "Image (SIF state)" }
                    select id="image" name="image" required {
                        @for c in images {
                            option value=(c.reference) selected[c.reference == f.image] {
                                (c.reference) " (" (c.sif) ")"
                            }
                        }
                    }
                }
                p {
                    label for="template" { "Site template" }
                    select id="template" name="template" {
                        @for t in templates {
                            option value=(t.name) selected[t.name == f.template] {
                                (t.name) " — " (t.cpus) " CPUs, " (t.memory) ", " (t.time)
                                @if let Some(p) = &t.partition { ", partition " (p) }
                                @if let Some(g) = &t.gres { ", " (g) }
                            }
                        }
                    }
                }
                p {
                    label for="gpus" { "GPUs (adds --gres=gpu:N and --nv)" }
                    input id="gpus" name="gpus" type="number" min="0" max="64" value=(f.gpus);
                }
                (check("fast_storage", "Fast storage: stage inputs to node-local disk with rsync, copy results back", f.fast_storage))
                (text_field("fast_inputs", "Inputs to stage (comma-separated paths)", &f.fast_inputs, "/home/you/data"))
                (text_field("fast_results", "Results to copy back (comma-separated paths)", &f.fast_results, "/home/you/results"))
                (text_field("binds", "Bind mounts (comma-separated, host[:container])", &f.binds, "/scratch"))
                (text_field("mail_address", "Mail to", &f.mail_address, "you@example.org"))
                (check("mail_end", "Mail when the job ends", f.mail_end))
                (check("mail_fail", "Mail when the job fails", f.mail_fail))
                (text_field("array", "Job array", &f.array, "1-10"))
                (text_field("job_name", "Job name", &f.job_name, "train"))
                (text_field("command", "Command in the container", &f.command, "python3 train.py"))
                p {
                    button type="submit" name="action" value="generate" { "Generate" }
                    " "
                    button type="submit" name="action" value="download" { "Download" }
                }
            }
            @if let Some(s) = script {
                section aria-labelledby="script-h" class="card" {
                    h2 id="script-h" { "Your script" }
                    label for="script" { "Batch script (read-only)" }
                    textarea id="script" class="code" readonly rows="24" { (s) }
                    p { button type="button" class="copy-button" data-copy="script" { "Copy" } }
                }
            }
        },
    )
}
