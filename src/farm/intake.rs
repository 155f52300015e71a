//! Taking a built SIF into the store: check that the file is a SIF with a primary system
//! partition, hash it (once: a remote upload was hashed as it arrived), and import it as a blob
//! under that digest. Whoever built the file, the
//! server records only what it verified here.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::registry::names::{Algorithm, Digest, Hasher};
use crate::storage::BlobStore;

/// Read buffer for hashing.
const BUFFER: usize = 1 << 20;

/// A built SIF, hashed and imported into the blob store.
pub struct InspectedSif {
    pub digest: Digest,
    pub size: u64,
    pub squashfs_offset: u64,
    pub squashfs_size: u64,
}

/// Checks that `path` is a SIF with a primary squashfs partition, hashes it (unless the server
/// already hashed these bytes: `known`) and imports it.
pub fn import_sif(
    store: &BlobStore,
    path: &Path,
    known: Option<&Digest>,
) -> Result<InspectedSif, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let info = oci2sif::sif::read_descriptors(&mut file).map_err(|e| e.to_string())?;
    let part = info
        .primary_partition()
        .ok_or("it has no primary system partition")?;
    let (squashfs_offset, squashfs_size) = (part.offset, part.size);
    let (digest, size) = import(store, path, known)?;
    Ok(InspectedSif {
        digest,
        size,
        squashfs_offset,
        squashfs_size,
    })
}

/// An enroot image (pyxis's squashfs), hashed and imported into the blob store.
pub struct InspectedEnroot {
    pub digest: Digest,
    pub size: u64,
}

/// Checks that `path` is a squashfs (its magic), hashes it and imports it.
pub fn import_enroot(store: &BlobStore, path: &Path) -> Result<InspectedEnroot, String> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if &magic != b"hsqs" {
        return Err("it is not a squashfs image (no hsqs magic)".into());
    }
    let (digest, size) = import(store, path, None)?;
    Ok(InspectedEnroot { digest, size })
}

/// Imports the file at `path` as the blob of its digest: `known` when the server already
/// hashed these bytes (a remote upload, hashed as it arrived), else hashed here.
fn import(store: &BlobStore, path: &Path, known: Option<&Digest>) -> Result<(Digest, u64), String> {
    let (digest, size) = match known {
        Some(digest) => {
            let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
            (digest.clone(), size)
        }
        None => hash(path)?,
    };
    store
        .import_file(path, &digest)
        .map_err(|e| e.to_string())?;
    Ok((digest, size))
}

/// The digest and size of the file at `path`, read once.
fn hash(path: &Path) -> Result<(Digest, u64), String> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut reader = BufReader::with_capacity(BUFFER, File::open(path).map_err(|e| e.to_string())?);
    let mut buf = vec![0u8; BUFFER];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finish(), size))
}

/// Checks a SIF a remote builder uploaded for a job of `platform` before it is imported: it
/// parses as a SIF (bounds included), holds the objects Apptainer writes (a definition file,
/// the inspect metadata, the image config and a primary squashfs partition), and the
/// partition's and the header's architecture are the job's.
pub fn verify_remote(path: &Path, platform: &str) -> Result<(), String> {
    use oci2sif::sif::{DataType, FsType};
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let info =
        oci2sif::sif::read_descriptors(&mut file).map_err(|e| format!("it is not a SIF: {e}"))?;
    let part = info
        .primary_partition()
        .ok_or("it has no primary system partition")?;
    let partition = part
        .partition
        .as_ref()
        .ok_or("its primary partition has no partition data")?;
    if partition.fs_type != FsType::Squashfs {
        return Err(format!(
            "its primary partition is {:?}, not squashfs",
            partition.fs_type
        ));
    }
    for (wanted, what) in [
        (DataType::Deffile, "definition file"),
        (DataType::GenericJson, "inspect metadata (JSON.Generic)"),
    ] {
        if !info.objects.iter().any(|o| o.data_type == wanted) {
            return Err(format!("it has no {what} object"));
        }
    }
    let want_arch = platform.split('/').nth(1).unwrap_or("");
    let found = partition.arch.unwrap_or("unknown");
    if found != want_arch {
        return Err(format!(
            "its partition is built for {found}, but the job is for {platform}"
        ));
    }
    if info.arch.is_some_and(|a| a != want_arch) {
        return Err(format!(
            "its header names architecture {}, but the job is for {platform}",
            info.arch.unwrap_or("unknown")
        ));
    }
    Ok(())
}
