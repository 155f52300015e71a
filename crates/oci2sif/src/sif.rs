//! SIF (Singularity Image Format) container writer, and a small reader for its header and
//! descriptor table.
//!
//! The byte layout is the one of `apptainer/sif` `pkg/sif/create.go` (see
//! `docs/sif-build-spec.md` sections 1 and 2.1): a 128-byte global header at offset 0, a table
//! of [`DESCRIPTOR_CAPACITY`] descriptors of [`DESCRIPTOR_LEN`] bytes at [`DESCRIPTORS_OFFSET`],
//! and the data objects from [`DATA_OFFSET`] on. All integers are little-endian, fields packed.
//!
//! Object data is streamed from a reader into the output, so a multi-gigabyte squashfs
//! partition never has to fit in memory.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// What `apptainer build` puts in the header's launch-script field.
pub const LAUNCH_SCRIPT: &[u8] = b"#!/usr/bin/env run-singularity\n";
pub const MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// Spec version 1, printed `%02d` and NUL-terminated.
pub const VERSION: [u8; 3] = *b"01\0";
pub const HEADER_LEN: usize = 128;
pub const DESCRIPTOR_LEN: usize = 585;
/// The library's default descriptor capacity, which every Apptainer-built image has.
pub const DESCRIPTOR_CAPACITY: usize = 48;
pub const DESCRIPTORS_OFFSET: u64 = 4096;
pub const DESCRIPTORS_SIZE: u64 = (DESCRIPTOR_CAPACITY * DESCRIPTOR_LEN) as u64;
pub const DATA_OFFSET: u64 = DESCRIPTORS_OFFSET + DESCRIPTORS_SIZE;
/// Stored group IDs are OR'ed with this; readers strip it. A bare mask means "no group".
pub const GROUP_MASK: u32 = 0xF000_0000;
/// The group the library puts objects in unless told otherwise (Apptainer never tells it).
pub const DEFAULT_GROUP: u32 = 1;
/// Partitions start on a 4 KiB boundary so they can be loop-mounted at their offset.
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// `time.Time{}.Unix()` in Go: what deterministic images store as every timestamp.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;

const LAUNCH_LEN: usize = 32;
const NAME_LEN: usize = 128;
const EXTRA_LEN: usize = 384;
/// Bounds the table a reader allocates for a hostile header; real images have 48.
const MAX_READ_DESCRIPTORS: i64 = 4096;
const COPY_BUFFER_LEN: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SifError {
    #[error("I/O error on the SIF file: {0}")]
    Io(#[from] io::Error),
    #[error("not a SIF file (no SIF_MAGIC at offset 32)")]
    BadMagic,
    #[error("unsupported SIF version {0:?} (only version 01 exists)")]
    BadVersion([u8; 3]),
    #[error("corrupt SIF header: {0}")]
    CorruptHeader(String),
    #[error("corrupt SIF descriptor {index}: {reason}")]
    CorruptDescriptor { index: usize, reason: String },
    #[error("a SIF file holds at most {DESCRIPTOR_CAPACITY} objects, {0} were given")]
    TooManyObjects(usize),
    #[error("SIF object name is {0} bytes long, the limit is {NAME_LEN}")]
    NameTooLong(usize),
    #[error("a SIF file can hold only one primary system partition")]
    SecondPrimaryPartition,
    #[error("SIF object {index} was announced as {expected} bytes but its reader gave {got}")]
    ObjectSizeMismatch {
        index: usize,
        expected: u64,
        got: u64,
    },
}

/// Data object types (`DataType` in the library), numbered from 0x4001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Deffile,
    EnvVar,
    Labels,
    Partition,
    Signature,
    GenericJson,
    Generic,
    CryptoMessage,
    Sbom,
    OciRootIndex,
    OciBlob,
    Other(i32),
}

impl DataType {
    pub fn code(self) -> i32 {
        match self {
            DataType::Deffile => 0x4001,
            DataType::EnvVar => 0x4002,
            DataType::Labels => 0x4003,
            DataType::Partition => 0x4004,
            DataType::Signature => 0x4005,
            DataType::GenericJson => 0x4006,
            DataType::Generic => 0x4007,
            DataType::CryptoMessage => 0x4008,
            DataType::Sbom => 0x4009,
            DataType::OciRootIndex => 0x400A,
            DataType::OciBlob => 0x400B,
            DataType::Other(code) => code,
        }
    }

    pub fn from_code(code: i32) -> DataType {
        match code {
            0x4001 => DataType::Deffile,
            0x4002 => DataType::EnvVar,
            0x4003 => DataType::Labels,
            0x4004 => DataType::Partition,
            0x4005 => DataType::Signature,
            0x4006 => DataType::GenericJson,
            0x4007 => DataType::Generic,
            0x4008 => DataType::CryptoMessage,
            0x4009 => DataType::Sbom,
            0x400A => DataType::OciRootIndex,
            0x400B => DataType::OciBlob,
            other => DataType::Other(other),
        }
    }

    /// The name `siftool list` prints for the type.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Deffile => "Def.FILE",
            DataType::EnvVar => "Env.Vars",
            DataType::Labels => "JSON.Labels",
            DataType::Partition => "FS",
            DataType::Signature => "Signature",
            DataType::GenericJson => "JSON.Generic",
            DataType::Generic => "Generic/Raw",
            DataType::CryptoMessage => "Cryptographic Message",
            DataType::Sbom => "SBOM",
            DataType::OciRootIndex => "OCI.RootIndex",
            DataType::OciBlob => "OCI.Blob",
            DataType::Other(_) => "Unknown",
        }
    }
}

/// Filesystem type of a partition object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Squashfs,
    Ext3,
    ImmutableObject,
    Raw,
    EncryptedSquashfs,
    GocryptfsSquashfs,
    Other(i32),
}

impl FsType {
    pub fn code(self) -> i32 {
        match self {
            FsType::Squashfs => 1,
            FsType::Ext3 => 2,
            FsType::ImmutableObject => 3,
            FsType::Raw => 4,
            FsType::EncryptedSquashfs => 5,
            FsType::GocryptfsSquashfs => 6,
            FsType::Other(code) => code,
        }
    }

    pub fn from_code(code: i32) -> FsType {
        match code {
            1 => FsType::Squashfs,
            2 => FsType::Ext3,
            3 => FsType::ImmutableObject,
            4 => FsType::Raw,
            5 => FsType::EncryptedSquashfs,
            6 => FsType::GocryptfsSquashfs,
            other => FsType::Other(other),
        }
    }
}

/// Partition type of a partition object. At most one `PrimSys` per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    System,
    PrimSys,
    Data,
    Overlay,
    Other(i32),
}

impl PartType {
    pub fn code(self) -> i32 {
        match self {
            PartType::System => 1,
            PartType::PrimSys => 2,
            PartType::Data => 3,
            PartType::Overlay => 4,
            PartType::Other(code) => code,
        }
    }

    pub fn from_code(code: i32) -> PartType {
        match code {
            1 => PartType::System,
            2 => PartType::PrimSys,
            3 => PartType::Data,
            4 => PartType::Overlay,
            other => PartType::Other(other),
        }
    }
}

/// Go `GOARCH` names and their SIF codes (two ASCII digits + NUL), from `apptainer/sif`
/// `pkg/sif/arch.go`. `00` means unknown and is never listed.
const ARCHES: [(&str, [u8; 3]); 13] = [
    ("386", *b"01\0"),
    ("amd64", *b"02\0"),
    ("arm", *b"03\0"),
    ("arm64", *b"04\0"),
    ("ppc64", *b"05\0"),
    ("ppc64le", *b"06\0"),
    ("mips", *b"07\0"),
    ("mipsle", *b"08\0"),
    ("mips64", *b"09\0"),
    ("mips64le", *b"10\0"),
    ("s390x", *b"11\0"),
    ("riscv64", *b"12\0"),
    ("loong64", *b"13\0"),
];

/// The code header and partition store for an architecture unknown to SIF.
pub const ARCH_UNKNOWN: [u8; 3] = *b"00\0";

/// SIF arch code for a Go `GOARCH` name (`"amd64"` → `b"02\0"`).
pub fn arch_code(goarch: &str) -> Option<[u8; 3]> {
    ARCHES
        .iter()
        .find(|(name, _)| *name == goarch)
        .map(|(_, code)| *code)
}

/// Go `GOARCH` name for a SIF arch code (`b"02\0"` → `"amd64"`).
pub fn arch_name(code: [u8; 3]) -> Option<&'static str> {
    ARCHES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(name, _)| *name)
}

/// A random RFC 4122 version-4 UUID, as `apptainer build` gives every image.
pub fn random_uuid_v4() -> io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

/// Image-wide values the writer does not derive from the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerOptions {
    pub id: [u8; 16],
    /// Unix seconds stored as the header's and every descriptor's created/modified time.
    pub time: i64,
}

impl ContainerOptions {
    /// What the library's `OptCreateDeterministic` sets: nil UUID and Go's zero time.
    pub fn deterministic() -> Self {
        ContainerOptions {
            id: [0; 16],
            time: GO_ZERO_TIME,
        }
    }
}

/// What kind of object to add, with the type-specific metadata stored in its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Deffile,
    GenericJson,
    Partition {
        fs: FsType,
        part: PartType,
        arch: [u8; 3],
    },
}

impl ObjectKind {
    fn data_type(self) -> DataType {
        match self {
            ObjectKind::Deffile => DataType::Deffile,
            ObjectKind::GenericJson => DataType::GenericJson,
            ObjectKind::Partition { .. } => DataType::Partition,
        }
    }

    /// The library aligns partitions to 4 KiB and packs everything else.
    fn alignment(self) -> u64 {
        match self {
            ObjectKind::Partition { .. } => PARTITION_ALIGNMENT,
            _ => 1,
        }
    }

    fn extra(self) -> [u8; EXTRA_LEN] {
        let mut extra = [0u8; EXTRA_LEN];
        if let ObjectKind::Partition { fs, part, arch } = self {
            extra[0..4].copy_from_slice(&fs.code().to_le_bytes());
            extra[4..8].copy_from_slice(&part.code().to_le_bytes());
            extra[8..11].copy_from_slice(&arch);
        }
        extra
    }
}

/// One data object to write: its kind, its descriptor name (may be empty) and its bytes.
pub struct ObjectInput<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
    pub data: &'a mut dyn Read,
}

/// The contents of the four objects `apptainer build` writes, in its order.
pub struct ApptainerObjects<'a> {
    /// Descriptor 1 (Def.FILE).
    pub deffile: &'a mut dyn Read,
    /// Descriptor 2 (JSON.Generic `inspect-metadata.json`).
    pub inspect_metadata: &'a mut dyn Read,
    /// Descriptor 3 (JSON.Generic `oci-config.json`).
    pub oci_config: &'a mut dyn Read,
    /// Descriptor 4: the squashfs system partition, for the CPU of SIF code `arch`.
    pub squashfs: &'a mut dyn Read,
    pub arch: [u8; 3],
}

impl<'a> ApptainerObjects<'a> {
    /// The objects as [`write_container`] takes them.
    pub fn into_inputs(self) -> [ObjectInput<'a>; 4] {
        [
            ObjectInput {
                kind: ObjectKind::Deffile,
                name: "",
                data: self.deffile,
            },
            ObjectInput {
                kind: ObjectKind::GenericJson,
                name: "inspect-metadata.json",
                data: self.inspect_metadata,
            },
            ObjectInput {
                kind: ObjectKind::GenericJson,
                name: "oci-config.json",
                data: self.oci_config,
            },
            ObjectInput {
                kind: ObjectKind::Partition {
                    fs: FsType::Squashfs,
                    part: PartType::PrimSys,
                    arch: self.arch,
                },
                name: "",
                data: self.squashfs,
            },
        ]
    }
}

/// Where the writer put each object (absolute offsets in the output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifLayout {
    pub objects: Vec<ObjectPlacement>,
    /// Total file length: the end of the last object.
    pub total_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectPlacement {
    pub id: u32,
    pub offset: u64,
    pub size: u64,
}

/// The 128-byte global header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub launch_script: [u8; LAUNCH_LEN],
    pub magic: [u8; 10],
    pub version: [u8; 3],
    pub arch: [u8; 3],
    pub id: [u8; 16],
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_free: i64,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub descriptors_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..32].copy_from_slice(&self.launch_script);
        b[32..42].copy_from_slice(&self.magic);
        b[42..45].copy_from_slice(&self.version);
        b[45..48].copy_from_slice(&self.arch);
        b[48..64].copy_from_slice(&self.id);
        let numbers = [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ];
        for (i, n) in numbers.iter().enumerate() {
            b[64 + 8 * i..72 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            launch_script: array_at(b, 0),
            magic: array_at(b, 32),
            version: array_at(b, 42),
            arch: array_at(b, 45),
            id: array_at(b, 48),
            created_at: i64_at(b, 64),
            modified_at: i64_at(b, 72),
            descriptors_free: i64_at(b, 80),
            descriptors_total: i64_at(b, 88),
            descriptors_offset: i64_at(b, 96),
            descriptors_size: i64_at(b, 104),
            data_offset: i64_at(b, 112),
            data_size: i64_at(b, 120),
        }
    }
}

/// One 585-byte descriptor. `group_id` and `linked_id` are stored raw (mask included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub data_type: i32,
    pub used: bool,
    pub id: u32,
    pub group_id: u32,
    pub linked_id: u32,
    pub offset: i64,
    pub size: i64,
    pub size_with_padding: i64,
    pub created_at: i64,
    pub modified_at: i64,
    pub uid: i64,
    pub gid: i64,
    pub name: [u8; NAME_LEN],
    pub extra: [u8; EXTRA_LEN],
}

impl Descriptor {
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[0..4].copy_from_slice(&self.data_type.to_le_bytes());
        b[4] = u8::from(self.used);
        b[5..9].copy_from_slice(&self.id.to_le_bytes());
        b[9..13].copy_from_slice(&self.group_id.to_le_bytes());
        b[13..17].copy_from_slice(&self.linked_id.to_le_bytes());
        let numbers = [
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
        ];
        for (i, n) in numbers.iter().enumerate() {
            b[17 + 8 * i..25 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        b[73..201].copy_from_slice(&self.name);
        b[201..585].copy_from_slice(&self.extra);
        b
    }

    pub fn from_bytes(b: &[u8; DESCRIPTOR_LEN]) -> Descriptor {
        Descriptor {
            data_type: i32::from_le_bytes(array_at(b, 0)),
            used: b[4] != 0,
            id: u32::from_le_bytes(array_at(b, 5)),
            group_id: u32::from_le_bytes(array_at(b, 9)),
            linked_id: u32::from_le_bytes(array_at(b, 13)),
            offset: i64_at(b, 17),
            size: i64_at(b, 25),
            size_with_padding: i64_at(b, 33),
            created_at: i64_at(b, 41),
            modified_at: i64_at(b, 49),
            uid: i64_at(b, 57),
            gid: i64_at(b, 65),
            name: array_at(b, 73),
            extra: array_at(b, 201),
        }
    }
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(array_at(b, at))
}

/// Writes a complete SIF image to `out` (starting at offset 0) with `objects` in order, all in
/// group [`DEFAULT_GROUP`], and leaves the cursor at the end of the file.
///
/// The header and descriptor table are written last, once the object sizes are known, as the
/// Go library does; until then their space holds zeros.
pub fn write_container<W: Write + Seek>(
    out: &mut W,
    opts: &ContainerOptions,
    objects: &mut [ObjectInput<'_>],
) -> Result<SifLayout, SifError> {
    check_objects(objects)?;
    out.seek(SeekFrom::Start(0))?;
    write_zeros(out, DATA_OFFSET)?;

    let mut placer = Placer::new(opts.time);
    for object in objects.iter_mut() {
        write_zeros(out, placer.next_start(object) - placer.end)?;
        let size = copy_all(&mut object.data, out)?;
        placer.place(object, size);
    }

    let header = header_for(objects, opts, placer.end - DATA_OFFSET);
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::Start(DESCRIPTORS_OFFSET))?;
    for descriptor in &placer.descriptors {
        out.write_all(&descriptor.to_bytes())?;
    }
    out.seek(SeekFrom::Start(placer.end))?;
    out.flush()?;
    Ok(placer.layout())
}

/// [`write_container`] for objects whose sizes are known up front (`sizes[i]` bytes from
/// `objects[i]`): the file is written strictly front to back, header first, so `out` needs no
/// `Seek` and a hash or a network stream can follow it as it is written.
pub fn write_container_sized<W: Write>(
    out: &mut W,
    opts: &ContainerOptions,
    objects: &mut [ObjectInput<'_>],
    sizes: &[u64],
) -> Result<SifLayout, SifError> {
    check_objects(objects)?;
    assert_eq!(objects.len(), sizes.len(), "one size per object");
    let mut placer = Placer::new(opts.time);
    for (object, &size) in objects.iter().zip(sizes) {
        placer.place(object, size);
    }
    out.write_all(&head_bytes(objects, opts, &placer))?;
    let layout = placer.layout();
    write_placed(out, objects, &layout.objects)?;
    out.flush()?;
    Ok(layout)
}

/// Writes each object at its placement, zeros in the gaps, from [`DATA_OFFSET`] (where `out`
/// is); returns the end of the last one. An object whose reader gives other than its size is
/// an error.
fn write_placed(
    out: &mut impl Write,
    objects: &mut [ObjectInput<'_>],
    placements: &[ObjectPlacement],
) -> Result<u64, SifError> {
    let mut written = DATA_OFFSET;
    for (index, (object, placement)) in objects.iter_mut().zip(placements).enumerate() {
        write_zeros(out, placement.offset - written)?;
        let got = copy_all(&mut (&mut *object.data).take(placement.size), out)?;
        if got != placement.size {
            return Err(SifError::ObjectSizeMismatch {
                index,
                expected: placement.size,
                got,
            });
        }
        written = placement.offset + placement.size;
    }
    Ok(written)
}

/// Writes a SIF whose last object is written in place by `write_last`, so that a large
/// partition (the squashfs) goes straight to its offset instead of through a scratch copy.
///
/// `sizes` gives the sizes of every object but the last (whose `data` is not read): they fix
/// where the last object starts before it is written. The objects before it go in first, then
/// `write_last` is called with `out` positioned at the last object's offset and returns its
/// size; the header and the descriptor table (which hold that size) go in last, at offset 0.
/// The bytes are those [`write_container_sized`] writes; `out` is left at the end of the file.
/// `objects` must not be empty.
pub fn write_container_last_in_place<W, E>(
    out: &mut W,
    opts: &ContainerOptions,
    objects: &mut [ObjectInput<'_>],
    sizes: &[u64],
    write_last: impl FnOnce(&mut W) -> Result<u64, E>,
) -> Result<SifLayout, E>
where
    W: Write + Seek,
    E: From<SifError>,
{
    check_objects(objects)?;
    let (last, before) = objects
        .split_last_mut()
        .expect("a SIF written in place has a last object");
    assert_eq!(
        before.len(),
        sizes.len(),
        "one size per object but the last"
    );
    let mut placer = Placer::new(opts.time);
    for (object, &size) in before.iter().zip(sizes) {
        placer.place(object, size);
    }
    let last_start = placer.next_start(last);
    (|| -> Result<(), SifError> {
        out.seek(SeekFrom::Start(DATA_OFFSET))?;
        let written = write_placed(out, before, &placer.placements)?;
        write_zeros(out, last_start - written)?;
        Ok(())
    })()?;
    let size = write_last(out)?;
    placer.place(last, size);
    (|| -> Result<(), SifError> {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head_bytes(objects, opts, &placer))?;
        out.seek(SeekFrom::Start(placer.end))?;
        out.flush()?;
        Ok(())
    })()?;
    Ok(placer.layout())
}

/// The first [`DATA_OFFSET`] bytes of a SIF: the header, the descriptor table, zeros.
fn head_bytes(objects: &[ObjectInput<'_>], opts: &ContainerOptions, placer: &Placer) -> Vec<u8> {
    let mut head = vec![0u8; DATA_OFFSET as usize];
    let header = header_for(objects, opts, placer.end - DATA_OFFSET).to_bytes();
    head[..header.len()].copy_from_slice(&header);
    let mut at = DESCRIPTORS_OFFSET as usize;
    for descriptor in &placer.descriptors {
        let bytes = descriptor.to_bytes();
        head[at..at + bytes.len()].copy_from_slice(&bytes);
        at += bytes.len();
    }
    head
}

/// Lays objects out one after the other from [`DATA_OFFSET`], each at its alignment, as the Go
/// library does, and records their descriptors.
struct Placer {
    descriptors: Vec<Descriptor>,
    placements: Vec<ObjectPlacement>,
    /// The end of the last object placed.
    end: u64,
    time: i64,
}

impl Placer {
    fn new(time: i64) -> Self {
        Placer {
            descriptors: Vec::new(),
            placements: Vec::new(),
            end: DATA_OFFSET,
            time,
        }
    }

    /// Where `object` starts if it is placed next.
    fn next_start(&self, object: &ObjectInput<'_>) -> u64 {
        align_up(self.end, object.kind.alignment())
    }

    fn place(&mut self, object: &ObjectInput<'_>, size: u64) {
        let id = self.placements.len() as u32 + 1;
        let start = self.next_start(object);
        self.descriptors
            .push(descriptor_for(object, id, start, self.end, size, self.time));
        self.placements.push(ObjectPlacement {
            id,
            offset: start,
            size,
        });
        self.end = start + size;
    }

    fn layout(&self) -> SifLayout {
        SifLayout {
            objects: self.placements.clone(),
            total_size: self.end,
        }
    }
}

fn check_objects(objects: &[ObjectInput<'_>]) -> Result<(), SifError> {
    if objects.len() > DESCRIPTOR_CAPACITY {
        return Err(SifError::TooManyObjects(objects.len()));
    }
    if let Some(long) = objects.iter().find(|o| o.name.len() > NAME_LEN) {
        return Err(SifError::NameTooLong(long.name.len()));
    }
    let primaries = objects.iter().filter(|o| is_primary(o.kind)).count();
    if primaries > 1 {
        return Err(SifError::SecondPrimaryPartition);
    }
    Ok(())
}

fn is_primary(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Partition {
            part: PartType::PrimSys,
            ..
        }
    )
}

fn descriptor_for(
    object: &ObjectInput<'_>,
    id: u32,
    start: u64,
    unaligned_start: u64,
    size: u64,
    time: i64,
) -> Descriptor {
    let mut name = [0u8; NAME_LEN];
    name[..object.name.len()].copy_from_slice(object.name.as_bytes());
    Descriptor {
        data_type: object.kind.data_type().code(),
        used: true,
        id,
        group_id: DEFAULT_GROUP | GROUP_MASK,
        linked_id: 0,
        offset: start as i64,
        size: size as i64,
        size_with_padding: (start - unaligned_start + size) as i64,
        created_at: time,
        modified_at: time,
        uid: 0,
        gid: 0,
        name,
        extra: object.kind.extra(),
    }
}

/// The header, with the arch of the primary partition (the library copies it when adding one).
fn header_for(objects: &[ObjectInput<'_>], opts: &ContainerOptions, data_size: u64) -> Header {
    let arch = objects
        .iter()
        .find_map(|o| match o.kind {
            ObjectKind::Partition {
                part: PartType::PrimSys,
                arch,
                ..
            } => Some(arch),
            _ => None,
        })
        .unwrap_or(ARCH_UNKNOWN);
    let mut launch_script = [0u8; LAUNCH_LEN];
    launch_script[..LAUNCH_SCRIPT.len()].copy_from_slice(LAUNCH_SCRIPT);
    Header {
        launch_script,
        magic: MAGIC,
        version: VERSION,
        arch,
        id: opts.id,
        created_at: opts.time,
        modified_at: opts.time,
        descriptors_free: (DESCRIPTOR_CAPACITY - objects.len()) as i64,
        descriptors_total: DESCRIPTOR_CAPACITY as i64,
        descriptors_offset: DESCRIPTORS_OFFSET as i64,
        descriptors_size: DESCRIPTORS_SIZE as i64,
        data_offset: DATA_OFFSET as i64,
        data_size: data_size as i64,
    }
}

fn align_up(offset: u64, alignment: u64) -> u64 {
    offset.div_ceil(alignment) * alignment
}

fn write_zeros(out: &mut impl Write, mut len: u64) -> io::Result<()> {
    let zeros = [0u8; 4096];
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// `io::copy` with a larger buffer: the partition is usually hundreds of megabytes.
fn copy_all(from: &mut dyn Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER_LEN];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A SIF image's header and in-use descriptors, as read by [`read_descriptors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifInfo {
    pub id: [u8; 16],
    /// `None` when the header's arch code is unknown (e.g. no primary partition).
    pub arch: Option<&'static str>,
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_total: u64,
    pub descriptors_free: u64,
    pub data_offset: u64,
    pub data_size: u64,
    /// Used descriptors, in table order.
    pub objects: Vec<ObjectInfo>,
}

impl SifInfo {
    /// The primary system partition (the root filesystem Apptainer runs).
    pub fn primary_partition(&self) -> Option<&ObjectInfo> {
        self.objects.iter().find(|o| {
            o.partition
                .as_ref()
                .is_some_and(|p| p.part_type == PartType::PrimSys)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub id: u32,
    pub data_type: DataType,
    /// Group with the mask stripped; `None` when the object is in no group.
    pub group: Option<u32>,
    /// Raw link field: 0 = none, an object ID, or a group ID OR'ed with [`GROUP_MASK`].
    pub linked_id: u32,
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub created_at: i64,
    pub modified_at: i64,
    /// Set for partition objects only.
    pub partition: Option<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub fs_type: FsType,
    pub part_type: PartType,
    pub arch: Option<&'static str>,
}

/// Parses the header and descriptor table of the SIF image in `r` (which starts at offset 0),
/// checking what the Go loader checks plus the bounds a hostile file could break.
pub fn read_descriptors<R: Read + Seek>(r: &mut R) -> Result<SifInfo, SifError> {
    let mut raw = [0u8; HEADER_LEN];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut raw)?;
    let header = Header::from_bytes(&raw);
    let table = check_header(&header)?;
    // Objects are served from the file by offset (the squashfs partition through mapped windows,
    // where a read past the end is SIGBUS), so each must lie inside it.
    let file_len = r.seek(SeekFrom::End(0))?;

    r.seek(SeekFrom::Start(table.offset))?;
    let mut objects = Vec::new();
    let mut slot = [0u8; DESCRIPTOR_LEN];
    for index in 0..table.count {
        r.read_exact(&mut slot)?;
        let descriptor = Descriptor::from_bytes(&slot);
        if descriptor.used {
            let object = object_info(index, &descriptor)?;
            if object.offset + object.size > file_len {
                return Err(SifError::CorruptDescriptor {
                    index,
                    reason: format!("object ends past the end of the file ({file_len} bytes)"),
                });
            }
            objects.push(object);
        }
    }
    Ok(SifInfo {
        id: header.id,
        arch: arch_name(header.arch),
        created_at: header.created_at,
        modified_at: header.modified_at,
        descriptors_total: table.count as u64,
        descriptors_free: u64::try_from(header.descriptors_free).unwrap_or(0),
        data_offset: u64::try_from(header.data_offset).unwrap_or(0),
        data_size: u64::try_from(header.data_size).unwrap_or(0),
        objects,
    })
}

struct TableBounds {
    offset: u64,
    count: usize,
}

fn check_header(header: &Header) -> Result<TableBounds, SifError> {
    if header.magic != MAGIC {
        return Err(SifError::BadMagic);
    }
    if header.version != VERSION {
        return Err(SifError::BadVersion(header.version));
    }
    let corrupt = |what: &str| SifError::CorruptHeader(what.to_string());
    if !(0..=MAX_READ_DESCRIPTORS).contains(&header.descriptors_total) {
        return Err(corrupt("descriptor count out of range"));
    }
    if header.descriptors_size != header.descriptors_total * DESCRIPTOR_LEN as i64 {
        return Err(corrupt(
            "descriptor table size does not match the descriptor count",
        ));
    }
    let offset = u64::try_from(header.descriptors_offset)
        .map_err(|_| corrupt("negative descriptor table offset"))?;
    Ok(TableBounds {
        offset,
        count: header.descriptors_total as usize,
    })
}

fn object_info(index: usize, d: &Descriptor) -> Result<ObjectInfo, SifError> {
    let corrupt = |reason: &str| SifError::CorruptDescriptor {
        index,
        reason: reason.to_string(),
    };
    let offset = u64::try_from(d.offset).map_err(|_| corrupt("negative offset"))?;
    let size = u64::try_from(d.size).map_err(|_| corrupt("negative size"))?;
    if offset.checked_add(size).is_none() {
        return Err(corrupt("object end overflows"));
    }
    let data_type = DataType::from_code(d.data_type);
    let group = match d.group_id & !GROUP_MASK {
        0 => None,
        group => Some(group),
    };
    Ok(ObjectInfo {
        id: d.id,
        data_type,
        group,
        linked_id: d.linked_id,
        name: nul_terminated(&d.name),
        offset,
        size,
        created_at: d.created_at,
        modified_at: d.modified_at,
        partition: (data_type == DataType::Partition).then(|| partition_info(&d.extra)),
    })
}

fn partition_info(extra: &[u8; EXTRA_LEN]) -> PartitionInfo {
    PartitionInfo {
        fs_type: FsType::from_code(i32::from_le_bytes(array_at(extra, 0))),
        part_type: PartType::from_code(i32::from_le_bytes(array_at(extra, 4))),
        arch: arch_name(array_at(extra, 8)),
    }
}

fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn squash_kind() -> ObjectKind {
        ObjectKind::Partition {
            fs: FsType::Squashfs,
            part: PartType::PrimSys,
            arch: arch_code("amd64").unwrap(),
        }
    }

    /// Tiny stand-ins for the four objects `apptainer build` writes.
    const SAMPLE: [&[u8]; 4] = [
        b"bootstrap: docker\nfrom: x\n\n",
        b"{\"a\":1}",
        b"{}",
        &[7u8; 5000],
    ];

    /// Writes [`SAMPLE`] with `write`, given the objects and their sizes.
    fn write_sample<T>(write: impl FnOnce(&mut [ObjectInput<'_>], &[u64]) -> T) -> T {
        let [mut def, mut inspect, mut config, mut part] = SAMPLE;
        let sizes = SAMPLE.map(|o| o.len() as u64);
        let objects = ApptainerObjects {
            deffile: &mut def,
            inspect_metadata: &mut inspect,
            oci_config: &mut config,
            squashfs: &mut part,
            arch: arch_code("amd64").unwrap(),
        };
        write(&mut objects.into_inputs(), &sizes)
    }

    /// Writes the four objects `apptainer build` writes, with tiny stand-in contents.
    fn sample(opts: &ContainerOptions) -> (Vec<u8>, SifLayout) {
        let mut out = Cursor::new(Vec::new());
        let layout = write_sample(|objects, _| write_container(&mut out, opts, objects).unwrap());
        (out.into_inner(), layout)
    }

    #[test]
    fn sized_writer_writes_the_same_bytes_front_to_back() {
        let opts = ContainerOptions::deterministic();
        let (seeking, layout) = sample(&opts);
        // A plain Vec: no Seek.
        let mut sequential = Vec::new();
        let sized = write_sample(|objects, sizes| {
            write_container_sized(&mut sequential, &opts, objects, sizes).unwrap()
        });
        assert_eq!(sized, layout);
        assert_eq!(sequential, seeking);

        let (mut def, mut part) = (&b"x"[..], &[7u8; 10][..]);
        let mut short = [
            ObjectInput {
                kind: ObjectKind::Deffile,
                name: "",
                data: &mut def,
            },
            ObjectInput {
                kind: squash_kind(),
                name: "",
                data: &mut part,
            },
        ];
        let err = write_container_sized(&mut Vec::new(), &opts, &mut short, &[1, 11]).unwrap_err();
        assert!(matches!(
            err,
            SifError::ObjectSizeMismatch {
                index: 1,
                expected: 11,
                got: 10
            }
        ));
    }

    #[test]
    fn in_place_writer_writes_the_same_bytes() {
        let opts = ContainerOptions::deterministic();
        let (seeking, layout) = sample(&opts);
        let mut out = Cursor::new(Vec::new());
        let in_place = write_sample(|objects, sizes| {
            let last = SAMPLE[3];
            write_container_last_in_place(&mut out, &opts, objects, &sizes[..3], |out| {
                // Where the layout says the partition goes.
                assert_eq!(out.stream_position()?, layout.objects[3].offset);
                out.write_all(last)?;
                Ok::<_, SifError>(last.len() as u64)
            })
            .unwrap()
        });
        assert_eq!(in_place, layout);
        assert_eq!(out.position(), layout.total_size);
        assert_eq!(out.into_inner(), seeking);
    }

    #[test]
    fn layout_constants_match_the_spec() {
        assert_eq!(DESCRIPTORS_SIZE, 28080);
        assert_eq!(DATA_OFFSET, 32176);
        assert_eq!(LAUNCH_SCRIPT.len(), 31);
    }

    #[test]
    fn header_bytes_match_the_spec_table() {
        let opts = ContainerOptions {
            id: [0xab; 16],
            time: 1_700_000_000,
        };
        let (bytes, layout) = sample(&opts);
        let h = &bytes[..HEADER_LEN];
        assert_eq!(&h[0..32], b"#!/usr/bin/env run-singularity\n\0");
        assert_eq!(&h[32..42], b"SIF_MAGIC\0");
        assert_eq!(&h[42..45], b"01\0");
        assert_eq!(&h[45..48], b"02\0");
        assert_eq!(&h[48..64], &[0xab; 16]);
        let at = |o: usize| i64::from_le_bytes(h[o..o + 8].try_into().unwrap());
        assert_eq!(at(64), 1_700_000_000);
        assert_eq!(at(72), 1_700_000_000);
        assert_eq!(at(80), 44, "free descriptors");
        assert_eq!(at(88), 48, "total descriptors");
        assert_eq!(at(96), 4096);
        assert_eq!(at(104), 28080);
        assert_eq!(at(112), 32176);
        assert_eq!(at(120) as u64, layout.total_size - 32176);
        assert!(bytes[HEADER_LEN..4096].iter().all(|b| *b == 0));
    }

    #[test]
    fn descriptors_pack_metadata_then_align_the_partition() {
        let (bytes, layout) = sample(&ContainerOptions {
            id: [1; 16],
            time: 5,
        });
        let descriptor = |i: usize| {
            let at = 4096 + i * DESCRIPTOR_LEN;
            Descriptor::from_bytes(bytes[at..at + DESCRIPTOR_LEN].try_into().unwrap())
        };
        let def = descriptor(0);
        assert_eq!(def.data_type, 0x4001);
        assert!(def.used);
        assert_eq!(def.id, 1);
        assert_eq!(def.group_id, 0xF000_0001);
        assert_eq!(def.linked_id, 0);
        assert_eq!(
            (def.offset, def.size, def.size_with_padding),
            (32176, 27, 27)
        );
        assert_eq!((def.created_at, def.modified_at), (5, 5));
        assert_eq!(def.name, [0u8; 128]);

        let inspect = descriptor(1);
        assert_eq!(inspect.data_type, 0x4006);
        assert_eq!(inspect.offset, 32176 + 27);
        assert_eq!(&inspect.name[..22], b"inspect-metadata.json\0");

        let part = descriptor(3);
        assert_eq!(part.data_type, 0x4004);
        assert_eq!(part.offset, 32768, "next 4 KiB boundary after 32176+27+7+2");
        assert_eq!(part.size, 5000);
        assert_eq!(part.size_with_padding, 32768 - (32176 + 36) + 5000);
        assert_eq!(&part.extra[..11], &[1, 0, 0, 0, 2, 0, 0, 0, b'0', b'2', 0]);
        assert!(part.extra[11..].iter().all(|b| *b == 0));

        assert_eq!(descriptor(4), Descriptor::from_bytes(&[0; DESCRIPTOR_LEN]));
        assert_eq!(layout.total_size, 32768 + 5000);
        assert_eq!(bytes.len() as u64, layout.total_size);
        assert!(bytes[32176 + 36..32768].iter().all(|b| *b == 0));
        assert_eq!(&bytes[32768..32768 + 5000], &[7u8; 5000][..]);
    }

    #[test]
    fn descriptor_round_trips_through_bytes() {
        let d = Descriptor {
            data_type: 0x4004,
            used: true,
            id: 4,
            group_id: 0xF000_0001,
            linked_id: 3,
            offset: 36864,
            size: -1,
            size_with_padding: 9,
            created_at: GO_ZERO_TIME,
            modified_at: 2,
            uid: 3,
            gid: 4,
            name: [b'x'; 128],
            extra: [9; 384],
        };
        assert_eq!(Descriptor::from_bytes(&d.to_bytes()), d);
    }

    #[test]
    fn deterministic_output_is_identical_and_uses_go_zero_time() {
        let (a, _) = sample(&ContainerOptions::deterministic());
        let (b, _) = sample(&ContainerOptions::deterministic());
        assert_eq!(a, b);
        let info = read_descriptors(&mut Cursor::new(&a)).unwrap();
        assert_eq!(info.id, [0; 16]);
        assert_eq!(info.created_at, -62_135_596_800);
        assert!(info.objects.iter().all(|o| o.created_at == GO_ZERO_TIME));
    }

    #[test]
    fn reader_lists_what_the_writer_wrote() {
        let (bytes, layout) = sample(&ContainerOptions {
            id: [2; 16],
            time: 9,
        });
        let info = read_descriptors(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(info.arch, Some("amd64"));
        assert_eq!((info.descriptors_total, info.descriptors_free), (48, 44));
        let kinds: Vec<_> = info
            .objects
            .iter()
            .map(|o| (o.id, o.data_type, o.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, DataType::Deffile, ""),
                (2, DataType::GenericJson, "inspect-metadata.json"),
                (3, DataType::GenericJson, "oci-config.json"),
                (4, DataType::Partition, ""),
            ]
        );
        assert!(info.objects.iter().all(|o| o.group == Some(1)));
        let part = info.primary_partition().unwrap();
        assert_eq!((part.offset, part.size), (layout.objects[3].offset, 5000));
        assert_eq!(
            part.partition,
            Some(PartitionInfo {
                fs_type: FsType::Squashfs,
                part_type: PartType::PrimSys,
                arch: Some("amd64")
            })
        );
    }

    #[test]
    fn reader_rejects_garbage() {
        let (mut bytes, _) = sample(&ContainerOptions::deterministic());
        bytes[88..96].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(matches!(
            read_descriptors(&mut Cursor::new(&bytes)),
            Err(SifError::CorruptHeader(_))
        ));
        bytes[32] = b'X';
        assert!(matches!(
            read_descriptors(&mut Cursor::new(&bytes)),
            Err(SifError::BadMagic)
        ));
        assert!(read_descriptors(&mut Cursor::new(&b"short"[..])).is_err());
    }

    #[test]
    fn reader_rejects_objects_past_the_end_of_the_file() {
        let (bytes, _) = sample(&ContainerOptions::deterministic());
        assert!(read_descriptors(&mut Cursor::new(&bytes)).is_ok());
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            read_descriptors(&mut Cursor::new(truncated)),
            Err(SifError::CorruptDescriptor { .. })
        ));
    }

    #[test]
    fn writer_refuses_two_primary_partitions_and_long_names() {
        let mut out = Cursor::new(Vec::new());
        let (mut a, mut b) = (&b"a"[..], &b"b"[..]);
        let err = write_container(
            &mut out,
            &ContainerOptions::deterministic(),
            &mut [
                ObjectInput {
                    kind: squash_kind(),
                    name: "",
                    data: &mut a,
                },
                ObjectInput {
                    kind: squash_kind(),
                    name: "",
                    data: &mut b,
                },
            ],
        );
        assert!(matches!(err, Err(SifError::SecondPrimaryPartition)));
        let long = "n".repeat(129);
        let err = write_container(
            &mut out,
            &ContainerOptions::deterministic(),
            &mut [ObjectInput {
                kind: ObjectKind::Deffile,
                name: &long,
                data: &mut a,
            }],
        );
        assert!(matches!(err, Err(SifError::NameTooLong(129))));
    }

    #[test]
    fn arch_codes_round_trip() {
        for goarch in [
            "386", "amd64", "arm", "arm64", "ppc64le", "s390x", "riscv64", "loong64",
        ] {
            assert_eq!(arch_name(arch_code(goarch).unwrap()), Some(goarch));
        }
        assert_eq!(arch_code("amd64"), Some(*b"02\0"));
        assert_eq!(arch_code("riscv64"), Some(*b"12\0"));
        assert_eq!(arch_code("sparc"), None);
        assert_eq!(arch_name(ARCH_UNKNOWN), None);
    }

    #[test]
    fn data_type_codes() {
        assert_eq!(DataType::Deffile.code(), 0x4001);
        assert_eq!(DataType::Partition.code(), 0x4004);
        assert_eq!(DataType::GenericJson.code(), 0x4006);
        assert_eq!(DataType::OciBlob.code(), 0x400B);
        assert_eq!(DataType::from_code(0x4006), DataType::GenericJson);
        assert_eq!(DataType::from_code(7), DataType::Other(7));
    }

    #[test]
    fn random_uuid_is_version_4() {
        let id = random_uuid_v4().unwrap();
        assert_eq!(id[6] >> 4, 4);
        assert_eq!(id[8] >> 6, 0b10);
        assert_ne!(id, random_uuid_v4().unwrap());
    }
}
