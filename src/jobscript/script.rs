//! A batch script as the lint reads it: numbered lines, which of them Slurm takes as `#SBATCH`
//! directives (only those before the first command), and each command line's simple commands
//! as words, with the plain variable assignments seen so far (`IMAGE=alice/tool:1`,
//! `IMAGE=${IMAGE:-alice/tool:1}`) to resolve `"$IMAGE"`.
//!
//! This is no shell: it reads the shapes batch scripts have. A line it cannot split (a quote
//! left open across lines) is read as whitespace-separated words.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Blank,
    /// A comment or the `#!` line.
    Comment,
    /// `#SBATCH …`: `rest` follows the prefix; `late` once a command came before it (Slurm
    /// ignores it then).
    Directive {
        rest: &'a str,
        late: bool,
    },
    /// Looks like a directive but is none: `# SBATCH`, `#sbatch`, indented `#SBATCH`.
    NearDirective,
    Command,
}

#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// 1-based.
    pub number: usize,
    pub text: &'a str,
    pub kind: Kind<'a>,
}

pub fn lines(script: &str) -> Vec<Line<'_>> {
    let mut seen_command = false;
    script
        .lines()
        .enumerate()
        .map(|(i, text)| {
            let trimmed = text.trim_start();
            let kind = if trimmed.is_empty() {
                Kind::Blank
            } else if let Some(rest) = text.strip_prefix("#SBATCH") {
                if rest.is_empty() || rest.starts_with([' ', '\t']) {
                    Kind::Directive {
                        rest,
                        late: seen_command,
                    }
                } else {
                    Kind::NearDirective
                }
            } else if trimmed.starts_with('#') {
                if !seen_command && looks_like_directive(&trimmed[1..]) {
                    Kind::NearDirective
                } else {
                    Kind::Comment
                }
            } else {
                seen_command = true;
                Kind::Command
            };
            Line {
                number: i + 1,
                text,
                kind,
            }
        })
        .collect()
}

/// `SBATCH --x` after a `#` with other spacing or case: meant as a directive, read as a comment.
fn looks_like_directive(after_hash: &str) -> bool {
    let t = after_hash.trim_start();
    t.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("sbatch"))
        && t[6..].starts_with([' ', '\t'])
        && t[6..].trim_start().starts_with('-')
}

/// The simple commands of a command line: its words split at `;`, `&&`, `||`, `|` and `&`,
/// with command-substitution and subshell brackets taken off the edges of words
/// (`SIF=$(hpc-registry fetch x)` holds the command `hpc-registry fetch x`).
pub fn simple_commands(text: &str) -> Vec<Vec<String>> {
    let words =
        shlex::split(text).unwrap_or_else(|| text.split_whitespace().map(str::to_owned).collect());
    let mut out = vec![Vec::new()];
    for word in words {
        if matches!(
            word.as_str(),
            ";" | "&&" | "||" | "|" | "&" | "then" | "do" | "else"
        ) {
            out.push(Vec::new());
            continue;
        }
        let (inner, ends) = strip_edges(&word);
        if let Some((assignment, sub)) = inner.split_once("=$(").or_else(|| inner.split_once("=`"))
        {
            // `VAR=$(cmd …`: the assignment ends one command, the substitution starts another.
            push(&mut out, format!("{assignment}="));
            out.push(Vec::new());
            push(&mut out, sub.to_owned());
        } else if !inner.is_empty() {
            push(&mut out, inner.to_owned());
        }
        if ends {
            out.push(Vec::new());
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

fn push(out: &mut [Vec<String>], word: String) {
    if let Some(last) = out.last_mut() {
        last.push(word);
    }
}

/// The word without leading `$(`, `(`, `` ` `` and trailing `)`, `;`, `` ` ``; and whether a
/// trailing one ended a command.
fn strip_edges(word: &str) -> (&str, bool) {
    let mut w = word;
    loop {
        let before = w;
        w = w
            .strip_prefix("$(")
            .or_else(|| w.strip_prefix('('))
            .or_else(|| w.strip_prefix('`'))
            .unwrap_or(w);
        if w == before {
            break;
        }
    }
    let trimmed = w.trim_end_matches([')', ';', '`']);
    (trimmed, trimmed.len() != w.len())
}

/// Variables assigned so far with a value the script states (`NAME=value`, `export NAME=value`,
/// `NAME=${NAME:-value}`).
#[derive(Debug, Default, Clone)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    /// Records the assignments that start `command`.
    pub fn assign(&mut self, command: &[String]) {
        let words = command.iter().skip(usize::from(
            command
                .first()
                .is_some_and(|w| w == "export" || w == "readonly" || w == "local"),
        ));
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                break;
            };
            if !is_name(name) {
                break;
            }
            match self.expand(value) {
                Some(v) => {
                    self.0.insert(name.to_owned(), v);
                }
                None => {
                    self.0.remove(name);
                }
            }
        }
    }

    /// `word` with a whole-word variable reference resolved (`$N`, `${N}`, `${N:-default}`,
    /// `${N-default}`); a word without `$` as it is; `None` when it cannot be known here.
    pub fn expand(&self, word: &str) -> Option<String> {
        if !word.contains('$') {
            return Some(word.to_owned());
        }
        let inner = word
            .strip_prefix("${")
            .and_then(|w| w.strip_suffix('}'))
            .or_else(|| word.strip_prefix('$'))?;
        let (name, default) = match inner.split_once(":-").or_else(|| inner.split_once('-')) {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if !is_name(name) {
            return None;
        }
        match (self.0.get(name), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) if !d.contains('$') => Some(d.to_owned()),
            _ => None,
        }
    }
}

fn is_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The program a simple command runs, past assignments and wrappers (`exec`, `srun …`,
/// `env`, `time`, `command`); with the index of its word.
pub fn program(command: &[String]) -> Option<(usize, &str)> {
    let mut i = 0;
    while i < command.len() {
        let w = command[i].as_str();
        let is_assignment = w.split_once('=').is_some_and(|(n, _)| is_name(n));
        if is_assignment || matches!(w, "exec" | "env" | "time" | "command" | "nohup" | "then") {
            i += 1;
            continue;
        }
        if w == "srun" || w == "mpirun" {
            // Their own options come first; the program is the first plain word after them.
            i += 1;
            while i < command.len() && command[i].starts_with('-') {
                i += 1;
            }
            continue;
        }
        let base = w.rsplit('/').next().unwrap_or(w);
        return Some((i, base));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn directives_stop_at_the_first_command() {
        let text =
            "#!/bin/bash\n#SBATCH -t 10\n\n# note\n# SBATCH --mem=1G\necho hi\n#SBATCH --mem=1G\n";
        let kinds: Vec<_> = lines(text).into_iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Comment,
                Kind::Directive {
                    rest: " -t 10",
                    late: false
                },
                Kind::Blank,
                Kind::Comment,
                Kind::NearDirective,
                Kind::Command,
                Kind::Directive {
                    rest: " --mem=1G",
                    late: true
                },
            ]
        );
    }

    #[test]
    fn commands_and_substitutions() {
        assert_eq!(
            simple_commands("SIF=$(hpc-registry fetch alice/t:1) && echo \"$SIF\"; ls"),
            [
                words(&["SIF="]),
                words(&["hpc-registry", "fetch", "alice/t:1"]),
                words(&["echo", "$SIF"]),
                words(&["ls"]),
            ]
        );
        assert_eq!(
            simple_commands("srun -N2 --mpi=pmix exec hpc-registry run x"),
            [words(&[
                "srun",
                "-N2",
                "--mpi=pmix",
                "exec",
                "hpc-registry",
                "run",
                "x"
            ])]
        );
        assert_eq!(
            program(&words(&[
                "srun",
                "-N2",
                "X=1",
                "/usr/bin/hpc-registry",
                "run"
            ])),
            Some((3, "hpc-registry"))
        );
    }

    #[test]
    fn variables() {
        let mut v = Vars::default();
        v.assign(&words(&["IMAGE=${IMAGE:-alice/tool:1}"]));
        assert_eq!(v.expand("$IMAGE").as_deref(), Some("alice/tool:1"));
        v.assign(&words(&["export", "IMAGE=bob/x:2", "OTHER=$UNKNOWN"]));
        assert_eq!(v.expand("${IMAGE}").as_deref(), Some("bob/x:2"));
        assert_eq!(v.expand("$OTHER"), None);
        assert_eq!(v.expand("${NOPE:-d/e:1}").as_deref(), Some("d/e:1"));
        assert_eq!(v.expand("pre$IMAGE"), None);
    }
}
