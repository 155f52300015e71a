//! How far a build is: the phase, layers and bytes done out of expected, and an ETA. The build
//! process measures what it reads ([`Meter`]) and reports it on stdout; the worker keeps the
//! latest [`Progress`] in a [`ProgressCell`] and writes it with each heartbeat into the job's
//! `progress` column (JSON), which `/sif/…/status` reports.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The phases of a build, in order.
pub mod phase {
    /// A remote builder downloads the job's blobs.
    pub const FETCHING: &str = "fetching";
    /// Layers are read and applied; the native builder compresses the full data blocks of
    /// large files meanwhile.
    pub const UNPACKING: &str = "unpacking";
    /// Every layer is in; the rest of the squashfs is compressed and written (the native
    /// builder: the last blocks in flight, the fragments and the tables).
    pub const COMPRESSING: &str = "compressing";
    /// The SIF file is being written.
    pub const WRITING: &str = "writing";
    /// The server checks, hashes and imports the SIF.
    pub const VERIFYING: &str = "verifying";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub layers_done: u64,
    pub layers_total: u64,
    /// Layer bytes (as stored, compressed) read so far, out of `bytes_expected`.
    pub bytes_done: u64,
    pub bytes_expected: u64,
    /// Seconds since the build started.
    pub elapsed_secs: u64,
    /// Estimated seconds left while unpacking (from the byte rate so far; what follows the
    /// last layer is assumed to take half as long as unpacking); `None` when there is no basis
    /// yet.
    pub eta_secs: Option<u64>,
}

impl Progress {
    /// A phase with nothing measured (e.g. `verifying`).
    pub fn phase(phase: &str) -> Progress {
        Progress {
            phase: phase.to_owned(),
            ..Progress::default()
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the `progress` column: JSON from this module, or a plain word (`claimed`,
    /// `done`) from the queue itself.
    pub fn from_column(column: &str) -> Progress {
        serde_json::from_str(column).unwrap_or_else(|_| Progress::phase(column))
    }
}

/// The latest progress of one build, shared by the process reader and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct ProgressCell(Arc<Mutex<Option<Progress>>>);

impl ProgressCell {
    pub fn set(&self, p: Progress) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    pub fn get(&self) -> Option<Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counts what the layers' readers deliver, inside the build process.
pub struct Meter {
    started: Instant,
    layers_total: u64,
    bytes_expected: u64,
    layers_done: AtomicU64,
    bytes_done: AtomicU64,
    writing: AtomicBool,
}

impl Meter {
    pub fn new(layers_total: u64, bytes_expected: u64) -> Arc<Meter> {
        Arc::new(Meter {
            started: Instant::now(),
            layers_total,
            bytes_expected,
            layers_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            writing: AtomicBool::new(false),
        })
    }

    /// Wraps layer `index`'s reader so that its bytes and its end are counted.
    pub fn reader<R: Read>(self: &Arc<Self>, index: u64, inner: R) -> MeteredReader<R> {
        MeteredReader {
            inner,
            meter: Arc::clone(self),
            index,
        }
    }

    /// Marks that the SIF file is being written.
    pub fn writing(&self) {
        self.writing.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Progress {
        let layers_done = self.layers_done.load(Ordering::Relaxed);
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let unpacking = layers_done < self.layers_total;
        let phase = if unpacking {
            phase::UNPACKING
        } else if self.writing.load(Ordering::Relaxed) {
            phase::WRITING
        } else {
            phase::COMPRESSING
        };
        let eta_secs = (unpacking && bytes_done > 0 && self.bytes_expected > 0).then(|| {
            let rate = bytes_done as f64 / elapsed.as_secs_f64().max(0.001);
            let left = self.bytes_expected.saturating_sub(bytes_done) as f64 / rate;
            // The native builder compresses large files' blocks while it unpacks; what is left
            // after the last layer (fragments, copying the blocks, the SIF) measured 0.4–0.5×
            // the unpack time on minbase and multilayer (zstd-3, 2026-12-04).
            (left + (elapsed.as_secs_f64() + left) / 2.0) as u64
        });
        Progress {
            phase: phase.to_owned(),
            layers_done,
            layers_total: self.layers_total,
            bytes_done,
            bytes_expected: self.bytes_expected,
            elapsed_secs: elapsed.as_secs(),
            eta_secs,
        }
    }
}

pub struct MeteredReader<R> {
    inner: R,
    meter: Arc<Meter>,
    index: u64,
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.meter.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
        } else if !buf.is_empty() {
            // This layer is read to its end.
            self.meter
                .layers_done
                .fetch_max(self.index + 1, Ordering::Relaxed);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_counts_bytes_and_finished_layers() {
        let meter = Meter::new(2, 10);
        let mut one = meter.reader(0, &b"abcd"[..]);
        let mut sink = Vec::new();
        one.read_to_end(&mut sink).unwrap();
        let p = meter.snapshot();
        assert_eq!(
            (p.phase.as_str(), p.layers_done, p.bytes_done),
            ("unpacking", 1, 4)
        );
        assert!(p.eta_secs.is_some());
        let mut two = meter.reader(1, &b"efghij"[..]);
        two.read_to_end(&mut sink).unwrap();
        let p = meter.snapshot();
        assert_eq!(
            (p.phase.as_str(), p.layers_done, p.bytes_done),
            ("compressing", 2, 10)
        );
        assert_eq!(p.eta_secs, None);
        meter.writing();
        assert_eq!(meter.snapshot().phase, "writing");
    }

    #[test]
    fn the_column_reads_json_or_a_word() {
        let p = Progress {
            phase: "unpacking".into(),
            layers_done: 1,
            ..Progress::default()
        };
        assert_eq!(Progress::from_column(&p.to_json()), p);
        assert_eq!(Progress::from_column("claimed").phase, "claimed");
    }
}
