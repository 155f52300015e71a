//! Site templates: the resources a generated batch script asks Slurm for. A site sets them in
//! `[[ui.templates]]`; without any, [`default_templates`] (`small`, `medium`, `large`, `gpu`,
//! the shapes of `deploy/slurm/templates/`).

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::values;
use crate::config::UiConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    /// `--partition`; none: the cluster's default.
    pub partition: Option<String>,
    /// `--cpus-per-task`.
    pub cpus: u32,
    /// `--mem`, in Slurm's syntax (`4G`).
    pub memory: String,
    /// `--time`, in Slurm's syntax (`01:00:00`).
    pub time: String,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
}

/// A template that is not fit for a `#SBATCH` line, named in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[ui.templates]] {name:?}: {why}")]
pub struct TemplateError {
    pub name: String,
    pub why: String,
}

fn template(name: &str, cpus: u32, memory: &str, time: &str, gres: Option<&str>) -> Template {
    Template {
        name: name.to_owned(),
        partition: None,
        cpus,
        memory: memory.to_owned(),
        time: time.to_owned(),
        gres: gres.map(str::to_owned),
    }
}

/// `small`, `medium`, `large` and `gpu`: the numbers of `deploy/slurm/templates/`.
pub fn default_templates() -> Vec<Template> {
    vec![
        template("small", 2, "4G", "01:00:00", None),
        template("medium", 8, "32G", "08:00:00", None),
        template("large", 32, "128G", "24:00:00", None),
        template("gpu", 8, "32G", "12:00:00", Some("gpu:1")),
    ]
}

impl Template {
    /// Checks every field against Slurm's grammar (and the generator's: names stand unquoted in
    /// `#SBATCH` lines).
    pub fn validate(&self) -> Result<(), TemplateError> {
        let fail = |why: String| TemplateError {
            name: self.name.clone(),
            why,
        };
        values::check_word("template name", &self.name, &[]).map_err(fail)?;
        if let Some(p) = &self.partition {
            values::check_word("partition", p, &[','])
                .map_err(|e| fail(format!("partition: {e}")))?;
        }
        if self.cpus == 0 {
            return Err(fail("cpus: at least 1".to_owned()));
        }
        values::parse_memory(&self.memory).map_err(|e| fail(format!("memory: {e}")))?;
        values::parse_time(&self.time).map_err(|e| fail(format!("time: {e}")))?;
        if let Some(g) = &self.gres {
            values::parse_gres(g).map_err(|e| fail(format!("gres: {e}")))?;
        }
        Ok(())
    }

    /// The GPUs the template's GRES asks for.
    pub fn gpus(&self) -> u64 {
        self.gres
            .as_deref()
            .and_then(|g| values::parse_gres(g).ok())
            .map_or(0, |list| gpu_count(&list))
    }
}

/// GPUs in a GRES list.
pub fn gpu_count(list: &[values::Gres]) -> u64 {
    list.iter()
        .filter(|g| g.name == "gpu")
        .map(|g| g.count)
        .sum()
}

/// The site's templates from `[ui]` (validated; names unique), or the defaults when it gives
/// none. The server calls this at start, so a bad template is a configuration error.
pub fn templates_from_config(ui: &UiConfig) -> Result<Vec<Template>, TemplateError> {
    if ui.templates.is_empty() {
        return Ok(default_templates());
    }
    let mut out: Vec<Template> = Vec::with_capacity(ui.templates.len());
    for t in &ui.templates {
        let template = Template {
            name: t.name.clone(),
            partition: t.partition.clone(),
            cpus: t.cpus,
            memory: t.memory.clone(),
            time: t.time.clone(),
            gres: t.gres.clone(),
        };
        template.validate()?;
        if out.iter().any(|o| o.name == template.name) {
            return Err(TemplateError {
                name: template.name,
                why: "defined twice".to_owned(),
            });
        }
        out.push(template);
    }
    Ok(out)
}

/// The site's templates as the running server has them. A reload (`admin reload`, SIGHUP)
/// replaces the whole list at once; a page or a script being generated keeps the list it
/// started with, so it never sees half of an old list and half of a new one.
#[derive(Debug, Clone)]
pub struct LiveTemplates(Arc<RwLock<Arc<Vec<Template>>>>);

impl LiveTemplates {
    pub fn new(templates: Vec<Template>) -> LiveTemplates {
        LiveTemplates(Arc::new(RwLock::new(Arc::new(templates))))
    }

    /// The templates now.
    pub fn current(&self) -> Arc<Vec<Template>> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, templates: Vec<Template>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(templates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TemplateConfig};

    #[test]
    fn defaults_are_valid_and_gpu_has_a_gpu() {
        let all = default_templates();
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["small", "medium", "large", "gpu"]);
        for t in &all {
            t.validate().unwrap();
        }
        assert_eq!(all[3].gpus(), 1);
        assert_eq!(all[0].gpus(), 0);
    }

    fn config(toml_text: &str) -> Config {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn config_templates_replace_the_defaults_and_bad_ones_are_named() {
        let c = config(
            "[[ui.templates]]\nname = \"tiny\"\npartition = \"debug\"\ncpus = 1\nmemory = \"500M\"\ntime = \"10\"\n",
        );
        assert_eq!(c.ui.session_idle_secs, 3600);
        assert_eq!(c.ui.session_max_secs, 43200);
        let t = templates_from_config(&c.ui).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].partition.as_deref(), Some("debug"));
        assert_eq!(
            templates_from_config(&Config::default().ui).unwrap(),
            default_templates()
        );
        let bad = |f: fn(&mut TemplateConfig)| {
            let mut t = TemplateConfig {
                name: "broken".into(),
                partition: None,
                cpus: 1,
                memory: "1G".into(),
                time: "10".into(),
                gres: None,
            };
            f(&mut t);
            let ui = UiConfig {
                templates: vec![t],
                ..UiConfig::default()
            };
            templates_from_config(&ui).unwrap_err().to_string()
        };
        for (msg, f) in [
            (
                "time",
                (|t: &mut TemplateConfig| t.time = "1h".into()) as fn(&mut TemplateConfig),
            ),
            ("memory", |t| t.memory = "4GB".into()),
            ("gres", |t| t.gres = Some("gpu:x:y".into())),
            ("partition", |t| t.partition = Some("a b".into())),
            ("cpus", |t| t.cpus = 0),
        ] {
            let e = bad(f);
            assert!(e.contains("\"broken\"") && e.contains(msg), "{e}");
        }
        let twice = UiConfig {
            templates: vec![
                TemplateConfig {
                    name: "a".into(),
                    partition: None,
                    cpus: 1,
                    memory: "1G".into(),
                    time: "10".into(),
                    gres: None,
                };
                2
            ],
            ..UiConfig::default()
        };
        assert!(templates_from_config(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        // Unknown keys in a template are refused by the config parser itself.
        assert!(toml::from_str::<Config>(
            "[[ui.templates]]\nname = \"x\"\ncpus = 1\nmemory = \"1G\"\ntime = \"1\"\ngpus = 1\n"
        )
        .is_err());
    }
}
