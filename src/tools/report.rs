//! The ✓/⚠/✗ report shared by `multus doctor` and `multus validate`.

use serde::Serialize;
use std::fmt::Write as _;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "⚠",
            Status::Fail => "✗",
        }
    }
}

/// One line of a report: `{check, status, message, hint}` in `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
    /// What to do about it; `None` when there is nothing to do.
    pub hint: Option<String>,
}

impl Check {
    pub fn new(status: Status, check: impl Into<String>, message: impl Into<String>, hint: Option<String>) -> Check {
        Check { check: check.into(), status, message: message.into(), hint }
    }

    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Status::Ok, check, message, None)
    }

    pub fn warn(check: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(Status::Warn, check, message, Some(hint.into()))
    }

    pub fn fail(check: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(Status::Fail, check, message, Some(hint.into()))
    }
}

/// The checks in the order they were made. Serialises as a bare JSON list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// 0 when nothing failed, 1 otherwise (warnings do not fail).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.count(Status::Fail) > 0)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// One line per check, hints indented under warnings and failures, a summary last:
    /// meant to be pasted into an issue as is.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {}: {}", c.status.symbol(), c.check, c.message);
            if let (Status::Warn | Status::Fail, Some(hint)) = (c.status, &c.hint) {
                let _ = writeln!(out, "    hint: {hint}");
            }
        }
        out.push_str(&self.summary());
        out
    }

    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
        format!(
            "{}, {}, {} ok",
            plural(self.count(Status::Fail), "failure"),
            plural(self.count(Status::Warn), "warning"),
            self.count(Status::Ok)
        )
    }
}
