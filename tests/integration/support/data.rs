//! Test data: digests, unique names, random bytes, and a deterministic generator whose bytes are a
//! pure function of (seed, offset), so a blob of any size can be streamed, re-streamed from any
//! offset and hashed without ever being held in memory.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Hashes everything `r` yields; returns (`sha256:<hex>`, byte count). Streams in 1 MiB pieces.
pub fn hash_reader<R: Read>(mut r: R) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between calls and between runs.
pub fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix64(
        t ^ (u64::from(std::process::id()) << 32)
            ^ COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x1000_0001),
    )
}

/// `prefix-<random hex>`: a name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", fresh_seed() & 0xffff_ffff_ffff)
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    PatternReader::new(fresh_seed(), 0, n as u64)
        .read_exact(&mut v)
        .unwrap();
    v
}

/// Streams bytes `[start, start+len)` of the infinite pseudo-random sequence named by `seed`.
#[derive(Clone, Debug)]
pub struct PatternReader {
    seed: u64,
    pos: u64,
    end: u64,
}

impl PatternReader {
    pub fn new(seed: u64, start: u64, len: u64) -> Self {
        PatternReader {
            seed,
            pos: start,
            end: start + len,
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn word(&self, index: u64) -> [u8; 8] {
        splitmix64(self.seed ^ index.wrapping_mul(0xD134_2543_DE82_EF95)).to_le_bytes()
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        let mut i = 0;
        while i < want {
            let word = self.word(self.pos / 8);
            let off = (self.pos % 8) as usize;
            let k = (8 - off).min(want - i);
            buf[i..i + k].copy_from_slice(&word[off..off + k]);
            i += k;
            self.pos += k as u64;
        }
        Ok(want)
    }
}

/// Digest of bytes `[0, len)` of the pattern `seed` (computed by streaming).
pub fn pattern_digest(seed: u64, len: u64) -> String {
    hash_reader(PatternReader::new(seed, 0, len)).unwrap().0
}

/// The bytes `[start, start+len)` of pattern `seed` (only for small pieces).
pub fn pattern_bytes(seed: u64, start: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    PatternReader::new(seed, start, len as u64)
        .read_exact(&mut v)
        .unwrap();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_pattern_is_offset_independent() {
        let whole = pattern_bytes(7, 0, 1000);
        for start in [0usize, 1, 7, 8, 9, 333] {
            assert_eq!(pattern_bytes(7, start as u64, 1000 - start), whole[start..]);
        }
        assert_ne!(pattern_bytes(8, 0, 64), whole[..64]);
        assert_eq!(pattern_digest(7, 1000), sha256_digest(&whole));
    }
}
