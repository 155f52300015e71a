//! The value grammars of the `#SBATCH` options the generator writes and the lint checks, as
//! Slurm's sbatch(1) documents them: times, memory sizes, GRES lists, job arrays, mail types.
//! Each parser answers `Err(why)` in words a researcher can act on.

/// `--time`: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS` (or `INFINITE`,
/// `UNLIMITED`); returns seconds (`u64::MAX` for no limit). Minutes and seconds after the first
/// field are below 60, hours after a day count below 24: anything else is a typo Slurm would
/// quietly turn into another limit.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("infinite") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(u64::MAX);
    }
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not a Slurm time ({why}): write MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
        ))
    };
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    let fields: Vec<&str> = clock.split(':').collect();
    let mut numbers = Vec::with_capacity(fields.len());
    for f in fields.iter().chain(days.iter()) {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || f.len() > 9 {
            return bad("each field is a number");
        }
    }
    for f in &fields {
        numbers.push(f.parse::<u64>().unwrap_or(0));
    }
    let (h, m, s) = match (days.is_some(), numbers.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (false, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        (true, [h, m, s]) => (*h, *m, *s),
        _ => return bad("too many fields"),
    };
    let d = days.map_or(0, |d| d.parse::<u64>().unwrap_or(0));
    let n = numbers.len();
    let has_seconds = if days.is_some() { n == 3 } else { n >= 2 };
    let minutes_follow = if days.is_some() { n >= 2 } else { n == 3 };
    if has_seconds && s >= 60 {
        return bad("seconds go up to 59");
    }
    if minutes_follow && m >= 60 {
        return bad("minutes go up to 59");
    }
    if days.is_some() && h >= 24 {
        return bad("hours after a day count go up to 23");
    }
    Ok(((d * 24 + h) * 60 + m) * 60 + s)
}

/// `--mem`, `--mem-per-cpu`, `--tmp`: a whole number with an optional unit K, M (default), G
/// or T; returns MiB (rounded up). `4GB` or `1.5G` are refused, as sbatch refuses them.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "M" => Some(0i32),
        "K" => Some(-10),
        "G" => Some(10),
        "T" => Some(20),
        _ => None,
    };
    let value = number.parse::<u64>().ok();
    match (value, shift) {
        (Some(v), Some(shift)) if shift < 0 => Ok(v.div_ceil(1024)),
        (Some(v), Some(shift)) => v
            .checked_mul(1u64 << shift)
            .ok_or_else(|| format!("{text:?} is too large")),
        _ => Err(format!(
            "{text:?} is not a Slurm memory size: a whole number with an optional unit K, M, G or T (4G, 500M)"
        )),
    }
}

/// One entry of a `--gres` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gres {
    pub name: String,
    pub kind: Option<String>,
    pub count: u64,
}

/// `--gres`: a comma-separated list of `name[:type][:count]` (count 1 when left out), or
/// `none`.
pub fn parse_gres(text: &str) -> Result<Vec<Gres>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    t.split(',')
        .map(|entry| parse_gres_entry(text, entry))
        .collect()
}

fn parse_gres_entry(text: &str, entry: &str) -> Result<Gres, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a GRES list ({why}): write name[:type]:count, e.g. gpu:2 or gpu:a100:1")
    };
    let parts: Vec<&str> = entry.split(':').collect();
    let name = parts[0];
    let is_name = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !is_name(name) {
        return Err(bad(&format!("{name:?} is not a resource name")));
    }
    let count_of = |s: &str| -> Option<u64> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (n, suffix) = s.split_at(digits);
        let n = n.parse::<u64>().ok()?;
        let factor = match suffix.to_ascii_lowercase().as_str() {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(factor)
    };
    let is_type = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let (kind, count) = match parts.as_slice() {
        [_] => (None, Some(1)),
        [_, last] => match count_of(last) {
            Some(n) => (None, Some(n)),
            None if is_type(last) && !last.starts_with(|c: char| c.is_ascii_digit()) => {
                (Some(*last), Some(1))
            }
            None => return Err(bad(&format!("{last:?} is neither a type nor a count"))),
        },
        [_, kind, count] => {
            if !is_type(kind) {
                return Err(bad(&format!("{kind:?} is not a type")));
            }
            (Some(*kind), count_of(count))
        }
        _ => return Err(bad("too many fields")),
    };
    let count = count.ok_or_else(|| bad("the count is a whole number"))?;
    Ok(Gres {
        name: name.to_owned(),
        kind: kind.map(str::to_owned),
        count,
    })
}

/// `--gpus`/`-G` and `--gpus-per-*`: `[type:]count`.
pub fn parse_gpus(text: &str) -> Result<u64, String> {
    let count = text.rsplit(':').next().unwrap_or_default();
    count
        .parse::<u64>()
        .map_err(|_| format!("{text:?} is not a GPU count: write [type:]count, e.g. 2 or a100:2"))
}

/// `--array`: `N`, `N-M`, `N-M:STEP` and comma lists of them, with an optional `%LIMIT` of tasks
/// running at once.
pub fn check_array(text: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{text:?} is not a job array: write 0-15, 1,3,5, 0-15:4 or 0-99%10"
        ))
    };
    let (list, limit) = match text.split_once('%') {
        Some((l, n)) => (l, Some(n)),
        None => (text, None),
    };
    let number = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if limit.is_some_and(|n| !number(n)) || list.is_empty() {
        return bad();
    }
    for item in list.split(',') {
        let (range, step) = match item.split_once(':') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let ok = match range.split_once('-') {
            Some((a, b)) => {
                number(a)
                    && number(b)
                    && a.parse::<u64>().unwrap_or(0) <= b.parse::<u64>().unwrap_or(0)
            }
            None => number(range) && step.is_none(),
        };
        if !ok || step.is_some_and(|s| !number(s) || s.bytes().all(|b| b == b'0')) {
            return bad();
        }
    }
    Ok(())
}

/// The `--mail-type` values sbatch(1) lists.
pub const MAIL_TYPES: &[&str] = &[
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
];

/// `--mail-type`: a comma-separated list of [`MAIL_TYPES`].
pub fn check_mail_type(text: &str) -> Result<(), String> {
    for t in text.split(',') {
        if !MAIL_TYPES.iter().any(|m| m.eq_ignore_ascii_case(t)) {
            return Err(format!(
                "{t:?} is not a mail type: use {}",
                MAIL_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// A mail address or a local user name for `--mail-user`: no spaces, quotes or shell
/// characters, so it can stand unquoted in a `#SBATCH` line.
pub fn check_mail_user(text: &str) -> Result<(), String> {
    let local_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-'))
    };
    let domain_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    };
    let ok = match text.split_once('@') {
        Some((local, domain)) => local_ok(local) && domain_ok(domain),
        None => local_ok(text),
    };
    if ok && text.len() <= 254 {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a mail address (user@example.org) or a user name"
        ))
    }
}

/// A name that stands unquoted in a `#SBATCH` line: a template or job name, a partition list.
pub fn check_word(what: &str, text: &str, extra: &[char]) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') || extra.contains(&c)
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a valid {what}: letters, digits and . _ - + only (at most 128)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form_slurm_accepts() {
        for (text, secs) in [
            ("30", 1800),
            ("30:15", 1815),
            ("04:00:00", 4 * 3600),
            ("48:00:00", 48 * 3600),
            ("2-12", (2 * 24 + 12) * 3600),
            ("1-02:30", (26 * 60 + 30) * 60),
            ("1-00:00:05", 86405),
            ("0", 0),
        ] {
            assert_eq!(parse_time(text), Ok(secs), "{text}");
        }
        assert_eq!(parse_time("UNLIMITED"), Ok(u64::MAX));
        for bad in [
            "", "1h", "1:2:3:4", "1-2-3", "10:75", "1:60:00", "1-24", "-5", "1.5", "1-", "a:b",
            "1:00:60",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("4G"), Ok(4096));
        assert_eq!(parse_memory("500"), Ok(500));
        assert_eq!(parse_memory("500m"), Ok(500));
        assert_eq!(parse_memory("1T"), Ok(1 << 20));
        assert_eq!(parse_memory("1536K"), Ok(2));
        assert_eq!(parse_memory("0"), Ok(0));
        for bad in ["4GB", "1.5G", "G", "", "4 G", "-1G", "4g8"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn gres_lists() {
        let g = |name: &str, kind: Option<&str>, count| Gres {
            name: name.into(),
            kind: kind.map(Into::into),
            count,
        };
        assert_eq!(parse_gres("gpu:2"), Ok(vec![g("gpu", None, 2)]));
        assert_eq!(parse_gres("gpu"), Ok(vec![g("gpu", None, 1)]));
        assert_eq!(
            parse_gres("gpu:a100:4"),
            Ok(vec![g("gpu", Some("a100"), 4)])
        );
        assert_eq!(
            parse_gres("gpu:tesla"),
            Ok(vec![g("gpu", Some("tesla"), 1)])
        );
        assert_eq!(
            parse_gres("gpu:1,nvme:2k"),
            Ok(vec![g("gpu", None, 1), g("nvme", None, 2048)])
        );
        assert_eq!(parse_gres("none"), Ok(vec![]));
        for bad in [
            "",
            "gpu:",
            ":2",
            "gpu:a100:x",
            "gpu:1:2:3",
            "2gpu:1",
            "gpu:2x",
            "gpu,,x",
        ] {
            assert!(parse_gres(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn arrays_mail_and_words() {
        for ok in ["0-15", "1,3,5", "0-15:4", "0-99%10", "7"] {
            assert_eq!(check_array(ok), Ok(()), "{ok}");
        }
        for bad in ["", "5-1", "1-", "0-15:0", "a", "1%", "1:2", "0-9%x", "1;2"] {
            assert!(check_array(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_mail_type("END,FAIL"), Ok(()));
        assert!(check_mail_type("END,FAILED").is_err());
        assert_eq!(check_mail_user("alice@example.org"), Ok(()));
        assert_eq!(check_mail_user("alice"), Ok(()));
        for bad in ["a b@x", "a@x;rm", "\"a\"@x", "a@", "a\n@x", ""] {
            assert!(check_mail_user(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_word("job name", "train-1.2", &[]), Ok(()));
        assert!(check_word("job name", "a b", &[]).is_err());
        assert!(check_word("job name", "a\n#SBATCH", &[]).is_err());
        assert_eq!(parse_gpus("a100:2"), Ok(2));
        assert!(parse_gpus("two").is_err());
    }
}
