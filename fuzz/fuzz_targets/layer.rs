//! See FUZZING.md; the entry point is shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oci2sif::fuzzing::layer(data));
