//! Batch scripts for the cluster: the submit-script generator (issue 13, point 4) and the
//! sbatch lint (point 5). Plain types, no HTTP: the web UI calls this in-process with the
//! user's permissions, the CLI (`hpc-registry script|lint`) over HTTP with the user's
//! credentials; both resolve a script's images themselves and hand the answers to the pure
//! [`lint`].
//!
//! * [`template`]: site templates (`[[ui.templates]]`, [`default_templates`]);
//! * [`generate`](mod@generate): [`ScriptRequest`] → a script on `hpc-registry run`, and the
//!   `deploy/slurm/templates/` files ([`site_templates`]);
//! * [`lint`](mod@lint): [`Finding`]s by line; [`references`]: the images a script names;
//! * [`options`]: sbatch's option table and `#SBATCH` lines; [`values`]: times, memory, GRES,
//!   arrays; [`script`]: lines and commands; [`shell`]: quoting;
//! * [`test_only`]: `sbatch --test-only` where Slurm is installed.

pub mod generate;
pub mod lint;
pub mod options;
pub mod references;
pub mod script;
pub mod shell;
pub mod template;
pub mod test_only;
pub mod values;

pub use generate::{generate, site_templates, FastStorage, MailOn, ScriptError, ScriptRequest};
pub use lint::{lint, Finding, ImageState, Severity};
pub use references::{check_reference, image_references};
pub use template::{
    default_templates, templates_from_config, LiveTemplates, Template, TemplateError,
};
pub use test_only::{sbatch_test_only, TestOnly};
