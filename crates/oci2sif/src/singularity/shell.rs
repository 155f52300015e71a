//! Apptainer's shell quoting (`internal/pkg/util/shell/escape.go`), for values written into the
//! generated scripts.

/// Apptainer's `shell.Escape`: makes a value safe inside double quotes.
pub fn shell_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('`', "\\`")
        .replace('$', "\\$")
}

/// Apptainer's `shell.EscapeSingleQuotes`: makes a value safe inside single quotes.
pub fn escape_single_quotes(s: &str) -> String {
    s.replace('\'', "'\"'\"'")
}

/// Apptainer's `shell.ArgsQuoted`: each argument escaped and double-quoted, space-separated.
pub fn args_quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("\"{}\"", shell_escape(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Apptainer's `^[a-zA-Z_]+[a-zA-Z0-9_]*$` check on env names.
pub fn is_shell_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
