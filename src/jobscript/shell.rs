//! Shell quoting for generated scripts: every user value becomes exactly one word of the script,
//! never code. Control characters (a newline would end the line and start a `#SBATCH` or a
//! command of its own) are refused before quoting, since no quoting makes them portable.

/// Refuses control characters (newline, carriage return, NUL, escape, …).
pub fn check_printable(what: &str, text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{what} {text:?} contains the control character {c:?}: one line of printable text only"
        )),
        None => Ok(()),
    }
}

/// One shell word that means exactly `text` (quoted with `shlex` where needed).
pub fn quote(what: &str, text: &str) -> Result<String, String> {
    check_printable(what, text)?;
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|e| format!("{what} {text:?} cannot be quoted: {e}"))
}

/// The words of a command line as a researcher types it (`python train.py --lr '0.1'`), split
/// with POSIX quoting rules and quoted again one by one, so pipes, `;`, `$(…)` and backquotes
/// are arguments of the command, never shell code of the batch script. The one expansion kept
/// is Slurm's own job variables (`$SLURM_ARRAY_TASK_ID`, `${SLURM_JOB_ID}`), inside double
/// quotes: what an array job needs to pick its share of the work.
pub fn quote_command(command: &str) -> Result<Vec<String>, String> {
    check_printable("the command", command)?;
    let words = shlex::split(command).ok_or_else(|| {
        format!("the command {command:?} has an unbalanced quote or a trailing backslash")
    })?;
    words.iter().map(|w| quote_word(w)).collect()
}

/// One argument: a plain word as [`quote`] does, or, when it names Slurm job variables, a
/// double-quoted word in which only those references expand.
pub fn quote_word(word: &str) -> Result<String, String> {
    let refs = slurm_references(word);
    if refs.is_empty() {
        return quote("the argument", word);
    }
    check_printable("the argument", word)?;
    let mut out = String::from("\"");
    let mut i = 0;
    for (start, end) in refs {
        escape_into(&mut out, &word[i..start]);
        out.push_str(&word[start..end]);
        i = end;
    }
    escape_into(&mut out, &word[i..]);
    out.push('"');
    Ok(out)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Byte ranges of `$SLURM_X` and `${SLURM_X}` in `word`.
fn slurm_references(word: &str) -> Vec<(usize, usize)> {
    let bytes = word.as_bytes();
    let name_len = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
            .count()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let braced = bytes.get(i + 1) == Some(&b'{');
            let from = i + 1 + usize::from(braced);
            let n = name_len(from);
            let name = &word[from..from + n];
            let closed = !braced || bytes.get(from + n) == Some(&b'}');
            if name.starts_with("SLURM_") && name.len() > 6 && closed {
                let end = from + n + usize::from(braced);
                out.push((i, end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bash makes of `words`: one line per argument.
    fn bash_args(words: &[String]) -> Vec<String> {
        let script = format!("SLURM_ARRAY_TASK_ID=7; printf '%s\\n' {}", words.join(" "));
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{script}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn shell_code_in_a_command_stays_an_argument() {
        let words = quote_command(
            r#"python train.py --name "a b" '$(touch /tmp/x)' `id` ; rm -rf / | cat $HOME --task=$SLURM_ARRAY_TASK_ID "${SLURM_ARRAY_TASK_ID}x""#,
        )
        .unwrap();
        assert_eq!(
            bash_args(&words),
            [
                "python",
                "train.py",
                "--name",
                "a b",
                "$(touch /tmp/x)",
                "`id`",
                ";",
                "rm",
                "-rf",
                "/",
                "|",
                "cat",
                "$HOME",
                "--task=7",
                "7x"
            ]
        );
        assert!(quote_command("echo 'unbalanced").is_err());
        assert!(quote_command("echo a\n#SBATCH --uid=0").is_err());
        assert!(quote_command("echo a\r").is_err());
    }

    #[test]
    fn quoted_words_mean_themselves() {
        for text in [
            "plain", "a b", "it's", "$(x)", "\"q\"", "a\\b", "*", "#SBATCH", "", "~",
        ] {
            let q = quote("a value", text).unwrap();
            assert_eq!(bash_args(&[q.clone()]).join("\n"), text, "{q}");
        }
        assert!(quote("a value", "a\nb").is_err());
        assert!(quote("a value", "a\u{1b}[2J").is_err());
        let w = quote_word("$SLURM_JOB_ID-$SLURM_x-${SLURM_ARRAY_TASK_ID}\"`$").unwrap();
        assert_eq!(bash_args(&[w]).join(""), "-$SLURM_x-7\"`$");
    }
}
