//! A tiny ginkgo: ordered specs, failures recorded (the run goes on, like ginkgo), one report.

use super::env::Env;

#[derive(Debug)]
pub(super) enum Fail {
    Fail(String),
    Skip(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Fail(s)
    }
}

pub(super) type R = Result<(), Fail>;

/// `Expect(cond)`: fail the current spec with a message.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !($cond) {
            return Err($crate::conformance::runner::Fail::Fail(format!($($msg)*)));
        }
    };
}

/// `Expect(resp.StatusCode()).To(SatisfyAny(Equal(a), Equal(b), ...))`
macro_rules! ensure_status {
    ($resp:expr, $($code:expr),+) => {{
        let r = &$resp;
        let allowed: &[u16] = &[$($code),+];
        if !allowed.contains(&r.status) {
            return Err($crate::conformance::runner::Fail::Fail(format!("expected status {:?}, got {}:\n  {}", allowed, r.status, r.describe())));
        }
    }};
}

/// `Expect(resp.StatusCode()).To(SatisfyAll(BeNumerically(">=", 200), BeNumerically("<", 300)))`
macro_rules! ensure_2xx {
    ($resp:expr) => {{
        let r = &$resp;
        if !r.is_2xx() {
            return Err($crate::conformance::runner::Fail::Fail(format!(
                "expected a 2xx status, got {}:\n  {}",
                r.status,
                r.describe()
            )));
        }
    }};
}

/// 2xx or one of the listed codes (the teardown alternatives).
macro_rules! ensure_2xx_or {
    ($resp:expr, $($code:expr),+) => {{
        let r = &$resp;
        let allowed: &[u16] = &[$($code),+];
        if !r.is_2xx() && !allowed.contains(&r.status) {
            return Err($crate::conformance::runner::Fail::Fail(format!("expected a 2xx status or one of {:?}, got {}:\n  {}", allowed, r.status, r.describe())));
        }
    }};
}

pub(super) fn skip(why: &str) -> R {
    Err(Fail::Skip(why.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Suite,
    Strict,
    Advisory,
}

#[derive(Debug)]
pub(super) enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug)]
pub(super) struct Record {
    pub(super) path: String,
    pub(super) kind: Kind,
    pub(super) outcome: Outcome,
}

pub(super) struct Runner {
    pub(super) label: String,
    pub(super) stack: Vec<String>,
    pub(super) records: Vec<Record>,
    /// The report, printed in one piece at the end (tests run in parallel).
    pub(super) out: String,
}

impl Runner {
    pub(super) fn new(label: &str) -> Runner {
        Runner {
            label: label.to_string(),
            stack: vec![],
            records: vec![],
            out: format!("\n=== OCI conformance mirror: {label} ===\n"),
        }
    }

    pub(super) fn describe(&mut self, workflow: &str) {
        self.stack.clear();
        self.stack.push(workflow.to_string());
    }

    pub(super) fn context(&mut self, ctx: &str) {
        self.stack.truncate(1);
        self.stack.push(ctx.to_string());
    }

    pub(super) fn path(&self, text: &str) -> String {
        let mut p = self.stack.join(" / ");
        if !p.is_empty() {
            p.push_str(" / ");
        }
        p.push_str(text);
        p
    }

    pub(super) fn kind_of(text: &str) -> Kind {
        if text.starts_with("[advisory") {
            Kind::Advisory
        } else if text.starts_with('[') {
            Kind::Strict
        } else {
            Kind::Suite
        }
    }

    /// `g.Specify(text, func() {...})`
    pub(super) fn it(&mut self, e: &mut Env, text: &str, f: impl FnOnce(&mut Env) -> R) {
        let path = self.path(text);
        let kind = Self::kind_of(text);
        e.warnings.clear();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(e)));
        let outcome = match res {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(Fail::Fail(m))) => Outcome::Fail(m),
            Ok(Err(Fail::Skip(m))) => Outcome::Skip(m),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                Outcome::Fail(format!("panicked: {msg}"))
            }
        };
        let tag = match (&outcome, kind) {
            (Outcome::Pass, _) => "  ok  ",
            (Outcome::Skip(_), _) => " skip ",
            (Outcome::Fail(_), Kind::Advisory) => " ADVISORY",
            (Outcome::Fail(_), _) => " FAIL ",
        };
        self.out.push_str(&format!("{tag} {path}\n"));
        match &outcome {
            Outcome::Fail(m) => self
                .out
                .push_str(&format!("        {}\n", m.replace('\n', "\n        "))),
            Outcome::Skip(m) => self.out.push_str(&format!("        ({m})\n")),
            Outcome::Pass => {}
        }
        let warnings = std::mem::take(&mut e.warnings);
        self.records.push(Record {
            path: path.clone(),
            kind,
            outcome,
        });
        // The suite's Warn(): not a failure there; a failure of the [strict] twin here.
        for w in warnings {
            let p = format!("{path} [strict: the suite only warns]");
            self.out
                .push_str(&format!(" FAIL  {p}\n        WARNING: {w}\n"));
            self.records.push(Record {
                path: p,
                kind: Kind::Strict,
                outcome: Outcome::Fail(format!("suite WARNING: {w}")),
            });
        }
    }

    /// Prints the summary; panics when any non-advisory check failed.
    pub(super) fn finish(mut self) {
        let mut out = std::mem::take(&mut self.out);
        let count =
            |pred: &dyn Fn(&Record) -> bool| self.records.iter().filter(|r| pred(r)).count();
        let passed = count(&|r| matches!(r.outcome, Outcome::Pass));
        let skipped = count(&|r| matches!(r.outcome, Outcome::Skip(_)));
        let failed: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)) && r.kind != Kind::Advisory)
            .collect();
        let advisory: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)) && r.kind == Kind::Advisory)
            .collect();
        let suite_failed = failed.iter().filter(|r| r.kind == Kind::Suite).count();
        out.push_str(&format!(
            "\n=== {}: {} checks: {} passed, {} failed ({} official v1.1.x, {} strict/extra), {} skipped, {} advisory findings ===\n",
            self.label,
            self.records.len(),
            passed,
            failed.len(),
            suite_failed,
            failed.len() - suite_failed,
            skipped,
            advisory.len()
        ));
        for r in &advisory {
            if let Outcome::Fail(m) = &r.outcome {
                out.push_str(&format!(
                    "ADVISORY {}\n    {}\n",
                    r.path,
                    m.replace('\n', "\n    ")
                ));
            }
        }
        println!("{out}");
        if !failed.is_empty() {
            let mut msg = format!(
                "{}: {} conformance check(s) failed:\n",
                self.label,
                failed.len()
            );
            for r in &failed {
                if let Outcome::Fail(m) = &r.outcome {
                    let kind = if r.kind == Kind::Suite {
                        "official"
                    } else {
                        "strict"
                    };
                    msg.push_str(&format!(
                        "\n[{kind}] {}\n    {}\n",
                        r.path,
                        m.replace('\n', "\n    ")
                    ));
                }
            }
            panic!("{msg}");
        }
    }
}
