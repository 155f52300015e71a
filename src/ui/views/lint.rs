//! The lint page: the form, the findings by line, and the script with its flagged lines.

use maud::{html, Markup};

use super::{csrf_field, page, Nav};
use crate::jobscript::{Finding, Severity};

fn severity(s: &Severity) -> &'static str {
    s.as_str()
}

pub fn lint(nav: &Nav, script: &str, findings: Option<&[Finding]>, slurm: Option<&str>) -> Markup {
    page(
        "Lint",
        Some(nav),
        html! {
            h1 { "Batch script lint" }
            p { "Checks #SBATCH options and values, the images the script runs (as you may see them), GPU options, copies of .sif files and container/host path mix-ups." }
            form method="post" action="/ui/lint" id="lint" class="card" {
                (csrf_field(&nav.csrf))
                p {
                    label for="lint-file" { "Load a file" }
                    input id="lint-file" type="file" accept=".sbatch,.sh,.slurm,text/*" data-fill="lint-script";
                }
                p {
                    label for="lint-script" { "Script" }
                    textarea id="lint-script" name="script" class="code" rows="18" spellcheck="false" { (script) }
                }
                p { button type="submit" { "Check" } }
            }
            @if let Some(findings) = findings {
                section aria-labelledby="findings-h" {
                    h2 id="findings-h" { "Findings" }
                    @if findings.is_empty() {
                        p class="notice" id="clean" { "No findings." }
                    }
                    table id="findings" {
                        thead { tr {
                            th scope="col" { "Line" } th scope="col" { "Severity" }
                            th scope="col" { "Check" } th scope="col" { "What" }
                        } }
                        tbody {
                            @for f in findings {
                                tr data-line=(f.line) data-code=(f.code) class={ "finding-" (severity(&f.severity)) } {
                                    td { a href={ "#line-" (f.line) } { (f.line) } }
                                    td { (severity(&f.severity)) }
                                    td { code { (f.code) } }
                                    td { (f.message) }
                                }
                            }
                        }
                    }
                    h3 { "The script" }
                    ol class="script" {
                        @for (i, line) in script.lines().enumerate() {
                            @let n = i + 1;
                            @let worst = findings.iter().filter(|f| f.line == n).map(|f| severity(&f.severity)).min_by_key(|s| match *s { "error" => 0, "warning" => 1, _ => 2 });
                            @let class = match worst { Some("error") => "flagged", Some("warning") => "flagged-warning", Some(_) => "noted", None => "" };
                            li id={ "line-" (n) } data-line=(n) class=(class) { (line) " " }
                        }
                    }
                }
            }
            @if let Some(s) = slurm {
                section aria-labelledby="slurm-h" {
                    h2 id="slurm-h" { "What sbatch --test-only says" }
                    pre id="slurm" tabindex="0" { (s) }
                }
            }
        },
    )
}
