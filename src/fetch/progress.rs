//! What `fetch` shows on standard error while it waits and downloads: a progress bar on a
//! terminal, a few plain lines in a batch log (a line per quarter of the download, one per change
//! of the build's state). Standard output carries only the resulting path.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::quota::format_size;

pub enum Progress {
    Bar(ProgressBar),
    Lines {
        /// The last build status line printed, to print only changes.
        last_status: String,
        /// Next quarter of the download to report.
        next_quarter: u64,
        total: u64,
    },
    Quiet,
}

impl Progress {
    /// A bar when standard error is a terminal, plain lines otherwise; nothing with `quiet`.
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                last_status: String::new(),
                next_quarter: 1,
                total: 0,
            }
        }
    }

    /// A message outside the bar (kept above it on a terminal).
    pub fn note(&mut self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Lines { .. } => eprintln!("{line}"),
            Progress::Quiet => {}
        }
    }

    /// The build's status JSON (`/sif/…/status`) while the SIF is not ready yet.
    pub fn building(&mut self, what: &str, status: &Value) {
        let line = format!("{what}: {}", describe_status(status));
        match self {
            Progress::Bar(bar) => bar.set_message(line),
            Progress::Lines { last_status, .. } => {
                // Progress figures change every poll; the state and phase are what a log wants.
                let key = format!(
                    "{}/{}",
                    status["state"].as_str().unwrap_or_default(),
                    phase_of(status)
                );
                if *last_status != key {
                    eprintln!("{line}");
                    *last_status = key;
                }
            }
            Progress::Quiet => {}
        }
    }

    /// The download of `total` bytes starts (at `done`, when resuming).
    pub fn start_download(&mut self, what: &str, done: u64, total: u64) {
        let resumed = if done > 0 {
            format!(", resuming at {}", format_size(done))
        } else {
            String::new()
        };
        match self {
            Progress::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(what.to_owned());
            }
            Progress::Lines {
                next_quarter,
                total: t,
                ..
            } => {
                eprintln!("{what}: downloading {}{resumed}", format_size(total));
                *t = total;
                *next_quarter = (done * 4).checked_div(total).map_or(4, |q| q + 1);
            }
            Progress::Quiet => {}
        }
    }

    /// `done` bytes of the download are in.
    pub fn downloaded(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines {
                next_quarter,
                total,
                ..
            } => {
                while *next_quarter < 4 && *total > 0 && done * 4 >= *next_quarter * *total {
                    eprintln!("  {}% ({})", *next_quarter * 25, format_size(done));
                    *next_quarter += 1;
                }
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(&mut self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// "building (unpacking, 40%)", "queued (position 3)".
pub fn describe_status(status: &Value) -> String {
    let state = status["state"].as_str().unwrap_or("waiting");
    let mut parts = Vec::new();
    if let Some(p) = status["position"].as_u64() {
        parts.push(format!("position {p} in the queue"));
    }
    // The farm reports a phase and figures, or (older servers) one line of text.
    let progress = &status["progress"];
    if let Some(text) = progress.as_str() {
        parts.push(text.to_owned());
    }
    if let Some(phase) = progress["phase"].as_str().or(status["phase"].as_str()) {
        parts.push(phase.to_owned());
    }
    // The farm's figures (`farm::progress::Progress`): layers and bytes done, and an ETA.
    if let (Some(done), Some(total)) = (
        progress["layers_done"].as_u64(),
        progress["layers_total"].as_u64(),
    ) {
        if total > 0 {
            parts.push(format!("layer {done}/{total}"));
        }
    }
    if let (Some(done), Some(total)) = (
        progress["bytes_done"].as_u64(),
        progress["bytes_expected"].as_u64(),
    ) {
        if let Some(pct) = done.saturating_mul(100).checked_div(total) {
            parts.push(format!("{}%", pct.min(100)));
        }
    }
    if let Some(eta) = progress["eta_secs"].as_u64() {
        parts.push(format!("about {eta}s left"));
    }
    if parts.is_empty() {
        format!("SIF {state}")
    } else {
        format!("SIF {state} ({})", parts.join(", "))
    }
}

fn phase_of(status: &Value) -> &str {
    let progress = &status["progress"];
    progress["phase"]
        .as_str()
        .or(status["phase"].as_str())
        .or(progress.as_str())
        .unwrap_or_default()
}
