//! `oci2sif` converts an OCI or Docker image (its config and its layers) into an Apptainer SIF
//! file, the way `apptainer build x.sif docker://…` does, with no external tools and no root.
//!
//! The pipeline, one module per step:
//! 1. [`layers`] applies each layer tar in order into a [`tree::Tree`] with umoci's semantics,
//!    treating every entry as hostile input; file bytes go to a [`tree::Spool`].
//! 2. [`singularity`] adds the `/.singularity.d` tree Apptainer adds (runscript, env, labels…).
//! 3. [`squashfs`] writes the tree as a squashfs image.
//! 4. [`sif`] wraps the squashfs and the metadata objects in a SIF container.
//!
//! [`build`] drives the four steps.

pub mod build;
pub mod enroot;
#[doc(hidden)]
pub mod fuzzing;
pub mod layers;
mod readahead;
pub mod sif;
pub mod singularity;
pub mod squashfs;
pub mod tree;

pub use build::{
    build_sif, build_sif_and_enroot, build_sif_and_enroot_into, build_sif_into, BuildError,
    BuildInput, BuildOptions, BuildReport, BuildTimings, Compression, LayerInput,
};
pub use squashfs::{BytesOnly, ImageSink};
