//! The options sbatch knows, and how a `#SBATCH` line reads.
//!
//! The table is sbatch(1) of Slurm 22.05 (the OPTIONS section, every long and short form),
//! checked against the option table of Slurm's `src/common/slurm_opt.c` for the options with an
//! sbatch handler that the manual does not list (`--tasks-per-node`, `--cluster`, `--mincpus`'s
//! siblings). Long options may be abbreviated to any unambiguous prefix, as getopt_long allows.

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    None,
    Required,
    /// Only attached: `--exclusive=user`, `-k`.
    Optional,
}

/// (long name, short letter, argument).
pub const OPTIONS: &[(&str, Option<char>, Arg)] = &[
    ("account", Some('A'), Arg::Required),
    ("acctg-freq", None, Arg::Required),
    ("array", Some('a'), Arg::Required),
    ("batch", None, Arg::Required),
    ("bb", None, Arg::Required),
    ("bbf", None, Arg::Required),
    ("begin", Some('b'), Arg::Required),
    ("chdir", Some('D'), Arg::Required),
    ("cluster-constraint", None, Arg::Required),
    ("clusters", Some('M'), Arg::Required),
    ("cluster", None, Arg::Required),
    ("comment", None, Arg::Required),
    ("constraint", Some('C'), Arg::Required),
    ("container", None, Arg::Required),
    ("contiguous", None, Arg::None),
    ("core-spec", Some('S'), Arg::Required),
    ("cores-per-socket", None, Arg::Required),
    ("cpu-freq", None, Arg::Required),
    ("cpus-per-gpu", None, Arg::Required),
    ("cpus-per-task", Some('c'), Arg::Required),
    ("deadline", None, Arg::Required),
    ("delay-boot", None, Arg::Required),
    ("dependency", Some('d'), Arg::Required),
    ("distribution", Some('m'), Arg::Required),
    ("error", Some('e'), Arg::Required),
    ("exclude", Some('x'), Arg::Required),
    ("exclusive", None, Arg::Optional),
    ("export", None, Arg::Required),
    ("export-file", None, Arg::Required),
    ("extra-node-info", Some('B'), Arg::Required),
    ("get-user-env", None, Arg::Optional),
    ("gid", None, Arg::Required),
    ("gpu-bind", None, Arg::Required),
    ("gpu-freq", None, Arg::Required),
    ("gpus", Some('G'), Arg::Required),
    ("gpus-per-node", None, Arg::Required),
    ("gpus-per-socket", None, Arg::Required),
    ("gpus-per-task", None, Arg::Required),
    ("gres", None, Arg::Required),
    ("gres-flags", None, Arg::Required),
    ("help", Some('h'), Arg::None),
    ("hint", None, Arg::Required),
    ("hold", Some('H'), Arg::None),
    ("ignore-pbs", None, Arg::None),
    ("input", Some('i'), Arg::Required),
    ("job-name", Some('J'), Arg::Required),
    ("kill-on-invalid-dep", None, Arg::Required),
    ("licenses", Some('L'), Arg::Required),
    ("mail-type", None, Arg::Required),
    ("mail-user", None, Arg::Required),
    ("mcs-label", None, Arg::Required),
    ("mem", None, Arg::Required),
    ("mem-bind", None, Arg::Required),
    ("mem-per-cpu", None, Arg::Required),
    ("mem-per-gpu", None, Arg::Required),
    ("mincpus", None, Arg::Required),
    ("network", None, Arg::Required),
    ("nice", None, Arg::Optional),
    ("no-kill", Some('k'), Arg::Optional),
    ("no-requeue", None, Arg::None),
    ("nodefile", Some('F'), Arg::Required),
    ("nodelist", Some('w'), Arg::Required),
    ("nodes", Some('N'), Arg::Required),
    ("ntasks", Some('n'), Arg::Required),
    ("ntasks-per-core", None, Arg::Required),
    ("ntasks-per-gpu", None, Arg::Required),
    ("ntasks-per-node", None, Arg::Required),
    ("ntasks-per-socket", None, Arg::Required),
    ("open-mode", None, Arg::Required),
    ("output", Some('o'), Arg::Required),
    ("overcommit", Some('O'), Arg::None),
    ("oversubscribe", Some('s'), Arg::None),
    ("parsable", None, Arg::None),
    ("partition", Some('p'), Arg::Required),
    ("power", None, Arg::Required),
    ("prefer", None, Arg::Required),
    ("priority", None, Arg::Required),
    ("profile", None, Arg::Required),
    ("propagate", None, Arg::Optional),
    ("qos", Some('q'), Arg::Required),
    ("quiet", Some('Q'), Arg::None),
    ("reboot", None, Arg::None),
    ("requeue", None, Arg::None),
    ("reservation", None, Arg::Required),
    ("signal", None, Arg::Required),
    ("sockets-per-node", None, Arg::Required),
    ("spread-job", None, Arg::None),
    ("switches", None, Arg::Required),
    ("tasks-per-node", None, Arg::Required),
    ("test-only", None, Arg::None),
    ("thread-spec", None, Arg::Required),
    ("threads-per-core", None, Arg::Required),
    ("time", Some('t'), Arg::Required),
    ("time-min", None, Arg::Required),
    ("tmp", None, Arg::Required),
    ("uid", None, Arg::Required),
    ("usage", None, Arg::None),
    ("use-min-nodes", None, Arg::None),
    ("verbose", Some('v'), Arg::None),
    ("version", Some('V'), Arg::None),
    ("wait", Some('W'), Arg::None),
    ("wait-all-nodes", None, Arg::Required),
    ("wckey", None, Arg::Required),
    ("wrap", None, Arg::Required),
];

/// One option of a `#SBATCH` line, by its long name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The long name (`time` for `-t`, `--ti` and `--time`).
    pub name: &'static str,
    /// As written (`-t`, `--time`), for messages.
    pub written: String,
    pub value: Option<String>,
}

/// A `#SBATCH` token that is not a known option, or lacks its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError {
    pub unknown_option: bool,
    pub message: String,
}

fn long(name: &str) -> Result<(&'static str, Arg), DirectiveError> {
    if let Some((n, _, a)) = OPTIONS.iter().find(|(n, _, _)| *n == name) {
        return Ok((n, *a));
    }
    let matches: Vec<_> = OPTIONS
        .iter()
        .filter(|(n, _, _)| !name.is_empty() && n.starts_with(name))
        .collect();
    match matches.as_slice() {
        [(n, _, a)] => Ok((n, *a)),
        [] => Err(DirectiveError {
            unknown_option: true,
            message: format!("sbatch has no option --{name}"),
        }),
        many => Err(DirectiveError {
            unknown_option: true,
            message: format!(
                "--{name} is ambiguous: {}",
                many.iter()
                    .map(|(n, _, _)| format!("--{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn short(letter: char) -> Result<(&'static str, Arg), DirectiveError> {
    OPTIONS
        .iter()
        .find(|(_, s, _)| *s == Some(letter))
        .map(|(n, _, a)| (*n, *a))
        .ok_or_else(|| DirectiveError {
            unknown_option: true,
            message: format!("sbatch has no option -{letter}"),
        })
}

/// The words of a `#SBATCH` line after the prefix: shell-like quoting, and a word starting with
/// `#` ends the line (a comment), as sbatch reads it.
pub fn words(rest: &str) -> Option<Vec<String>> {
    shlex::split(rest)
}

/// Reads the options of one `#SBATCH` line (`rest` is what follows `#SBATCH`).
pub fn parse_line(rest: &str) -> Vec<Result<Directive, DirectiveError>> {
    let Some(words) = words(rest) else {
        return vec![Err(DirectiveError {
            unknown_option: false,
            message: "unbalanced quote".to_owned(),
        })];
    };
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(word) = it.next() {
        let missing = |written: &str| DirectiveError {
            unknown_option: false,
            message: format!("{written} needs a value"),
        };
        if let Some(body) = word.strip_prefix("--") {
            let (name, attached) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let written = format!("--{name}");
            out.push(long(name).and_then(|(name, arg)| {
                let value = match (arg, attached) {
                    (Arg::None, Some(_)) => {
                        return Err(DirectiveError {
                            unknown_option: false,
                            message: format!("{written} takes no value"),
                        })
                    }
                    (Arg::Required, None) => Some(it.next().ok_or_else(|| missing(&written))?),
                    (_, v) => v,
                };
                Ok(Directive {
                    name,
                    written,
                    value,
                })
            }));
        } else if let Some(body) = word.strip_prefix('-').filter(|b| !b.is_empty()) {
            let mut chars = body.chars();
            let letter = chars.next().unwrap_or('-');
            let attached: String = chars.collect();
            let written = format!("-{letter}");
            out.push(short(letter).and_then(|(name, arg)| {
                let value = match arg {
                    Arg::Required if attached.is_empty() => {
                        Some(it.next().ok_or_else(|| missing(&written))?)
                    }
                    Arg::None if !attached.is_empty() => {
                        return Err(DirectiveError {
                            unknown_option: false,
                            message: format!("{written} takes no value (got {attached:?})"),
                        })
                    }
                    _ => Some(attached).filter(|a| !a.is_empty()),
                };
                Ok(Directive {
                    name,
                    written,
                    value,
                })
            }));
        } else {
            out.push(Err(DirectiveError {
                unknown_option: true,
                message: format!("{word:?} is not an option (options start with - or --)"),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rest: &str) -> Result<Directive, DirectiveError> {
        let mut all = parse_line(rest);
        assert_eq!(all.len(), 1, "{rest}: {all:?}");
        all.remove(0)
    }

    #[test]
    fn every_form_of_an_option() {
        for rest in [" --time=10", " --time 10", " -t 10", " -t10"] {
            let d = one(rest).unwrap();
            assert_eq!((d.name, d.value.as_deref()), ("time", Some("10")), "{rest}");
        }
        // getopt_long's unambiguous prefixes; `--ti` could be --time or --time-min.
        assert_eq!(one(" --partit=debug").unwrap().name, "partition");
        assert!(one(" --ti=10").unwrap_err().message.contains("ambiguous"));
        let d = one(" --comment=\"hpc-registry: a/b:1 c/d:2\"").unwrap();
        assert_eq!(d.value.as_deref(), Some("hpc-registry: a/b:1 c/d:2"));
        let all = parse_line(" -N 1 -n2 --exclusive # a comment --bogus");
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[2].as_ref().unwrap().name, "exclusive");
        assert!(one(" --requeue").unwrap().value.is_none());
    }

    #[test]
    fn unknown_ambiguous_and_incomplete_options() {
        assert!(one(" --tiem=10").unwrap_err().unknown_option);
        assert!(one(" -j").unwrap_err().unknown_option);
        let e = one(" --mem-per=1G").unwrap_err();
        assert!(e.message.contains("ambiguous"), "{e:?}");
        let e = one(" --time").unwrap_err();
        assert!(
            !e.unknown_option && e.message.contains("needs a value"),
            "{e:?}"
        );
        assert!(!one(" --requeue=yes").unwrap_err().unknown_option);
        assert!(one(" time=10").unwrap_err().unknown_option);
        assert!(!one(" --comment=\"open").unwrap_err().unknown_option);
    }

    #[test]
    fn the_table_has_each_name_and_letter_once() {
        let mut names: Vec<_> = OPTIONS.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPTIONS.len());
        let mut letters: Vec<_> = OPTIONS.iter().filter_map(|(_, s, _)| *s).collect();
        let n = letters.len();
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(letters.len(), n);
    }
}
