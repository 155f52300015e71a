//! Keeping the store healthy over time: scrubbing (re-hashing) what is stored.

pub mod scrub;
