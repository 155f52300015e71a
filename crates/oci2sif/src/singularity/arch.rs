//! The image's CPU architecture, from the ELF headers of its executables.

use std::io::{self, Read};

use super::SingularityError;
use crate::sif;
use crate::tree::resolve::{self, Rules};
use crate::tree::{InodeId, Kind, Spool, Tree};

/// What an ELF header says about the CPU a binary is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElfArch {
    NotElf,
    /// An ELF binary for a CPU SIF has no code for (e.g. big-endian arm64).
    Unknown,
    Known(&'static str),
}

/// (e_machine, 64-bit, little-endian) → GOARCH, after `formats` in apptainer
/// `internal/pkg/util/machine/machine.go` (with ppc64 as the 64-bit class it really is), plus
/// loong64, which SIF gained later.
const ELF_MACHINES: [(u16, bool, bool, &str); 14] = [
    (3, false, true, "386"),
    (6, false, true, "386"),
    (62, true, true, "amd64"),
    (40, false, true, "arm"),
    (183, true, true, "arm64"),
    (22, true, false, "s390x"),
    (21, true, false, "ppc64"),
    (21, true, true, "ppc64le"),
    (8, false, false, "mips"),
    (8, false, true, "mipsle"),
    (8, true, false, "mips64"),
    (8, true, true, "mips64le"),
    (243, true, true, "riscv64"),
    (258, true, true, "loong64"),
];

fn elf_arch(header: &[u8]) -> ElfArch {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return ElfArch::NotElf;
    }
    let is_64 = match header[4] {
        1 => false,
        2 => true,
        _ => return ElfArch::NotElf,
    };
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return ElfArch::NotElf,
    };
    let little = header[5] == 1;
    ELF_MACHINES
        .iter()
        .find(|(m, wide, le, _)| *m == machine && *wide == is_64 && *le == little)
        .map_or(ElfArch::Unknown, |(_, _, _, arch)| ElfArch::Known(arch))
}

fn file_elf_arch(tree: &Tree, spool: &Spool, id: InodeId) -> io::Result<ElfArch> {
    let Kind::File(content) = tree.inode(id).kind else {
        return Ok(ElfArch::NotElf);
    };
    let mut header = Vec::with_capacity(20);
    spool.reader(content).take(20).read_to_end(&mut header)?;
    Ok(elf_arch(&header))
}

/// The image's architecture as Apptainer determines it (`machine.ArchFromContainer`): the ELF
/// machine of `/bin/sh` (symlinks followed inside the image), else of the first executable ELF
/// file in path order (stopping at one of an unknown CPU); Apptainer then falls back to the
/// build host, this builder to the config's `architecture`, which says more about the image.
pub fn detect_arch(
    tree: &Tree,
    spool: &Spool,
    config_arch: &str,
) -> Result<String, SingularityError> {
    let sh = resolve::walk(tree, b"bin/sh", Rules::chroot(true));
    if let Some(id) = sh.ok().filter(|w| w.ends_with_name).and_then(|w| w.inode()) {
        if let ElfArch::Known(arch) = file_elf_arch(tree, spool, id)? {
            return Ok(arch.to_string());
        }
    }
    if let ElfArch::Known(arch) = first_executable_elf_arch(tree, spool)? {
        return Ok(arch.to_string());
    }
    if sif::arch_code(config_arch).is_some() {
        return Ok(config_arch.to_string());
    }
    Err(SingularityError::UnknownArchitecture(
        (!config_arch.is_empty()).then(|| config_arch.to_string()),
    ))
}

fn first_executable_elf_arch(tree: &Tree, spool: &Spool) -> io::Result<ElfArch> {
    let mut found = ElfArch::NotElf;
    let mut error = None;
    tree.walk(|_, id| {
        if found != ElfArch::NotElf || error.is_some() {
            return;
        }
        let inode = tree.inode(id);
        if !matches!(inode.kind, Kind::File(_)) || inode.meta.mode & 0o111 == 0 {
            return;
        }
        match file_elf_arch(tree, spool, id) {
            Ok(arch) => found = arch,
            Err(e) => error = Some(e),
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machine_mapping() {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        assert_eq!(elf_arch(&header), ElfArch::Known("amd64"));
        header[18] = 183;
        assert_eq!(elf_arch(&header), ElfArch::Known("arm64"));
        header[5] = 2;
        header[18] = 0;
        header[19] = 22;
        assert_eq!(elf_arch(&header), ElfArch::Known("s390x"));
        header[19] = 183;
        assert_eq!(
            elf_arch(&header),
            ElfArch::Unknown,
            "big-endian arm64 has no SIF code"
        );
        assert_eq!(elf_arch(b"#!/bin/sh\n"), ElfArch::NotElf);
    }
}
