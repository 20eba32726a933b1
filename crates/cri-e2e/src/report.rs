//! Scenario outcomes, printed as they finish, and the closing `N passed, M failed` line.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Returned (as an error) by a scenario that cannot run on this machine.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

#[derive(Default)]
pub struct Report {
    pub results: Vec<(String, Outcome, Duration)>,
}

impl Report {
    /// Runs one scenario (a panic is a failure) and prints its outcome.
    pub fn scenario<T>(&mut self, name: &str, body: impl FnOnce() -> Result<T>) -> Option<T> {
        println!("--- {name}");
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(anyhow::anyhow!("panicked: {why}"))
        });
        let elapsed = started.elapsed();
        let (outcome, value) = match result {
            Ok(value) => (Outcome::Passed, Some(value)),
            Err(e) => match e.downcast_ref::<Skip>() {
                Some(skip) => (Outcome::Skipped(skip.0.clone()), None),
                None => (Outcome::Failed(format!("{e:#}")), None),
            },
        };
        let seconds = elapsed.as_secs_f64();
        match &outcome {
            Outcome::Passed => println!("PASS {name} ({seconds:.1} s)"),
            Outcome::Failed(why) => println!("FAIL {name} ({seconds:.1} s): {why}"),
            Outcome::Skipped(why) => println!("SKIP {name}: {why}"),
        }
        self.results.push((name.to_owned(), outcome, elapsed));
        value
    }

    /// Marks scenarios that could not run because their setup failed.
    pub fn fail_all(&mut self, names: &[&str], why: &str) {
        for name in names {
            println!("FAIL {name}: {why}");
            self.results.push(((*name).to_owned(), Outcome::Failed(why.to_owned()), Duration::ZERO));
        }
    }

    pub fn count(&self, want: fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, outcome, _)| want(outcome)).count()
    }

    /// The per-scenario table, the skip count, and the closing line CI reads.
    pub fn print_summary(&self) {
        println!("\n== scenarios");
        for (name, outcome, elapsed) in &self.results {
            let word = match outcome {
                Outcome::Passed => "pass",
                Outcome::Failed(_) => "FAIL",
                Outcome::Skipped(_) => "skip",
            };
            println!("  {word:4}  {:6.1} s  {name}", elapsed.as_secs_f64());
        }
        let skipped = self.count(|o| matches!(o, Outcome::Skipped(_)));
        if skipped > 0 {
            println!("{skipped} skipped");
        }
        let passed = self.count(|o| *o == Outcome::Passed);
        let failed = self.count(|o| matches!(o, Outcome::Failed(_)));
        println!("{passed} passed, {failed} failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted() {
        let mut report = Report::default();
        assert_eq!(report.scenario("ok", || Ok(5)), Some(5));
        assert_eq!(report.scenario("bad", || -> Result<()> { anyhow::bail!("no") }), None);
        assert_eq!(report.scenario("skip", || -> Result<()> { Err(Skip("no kernel".into()).into()) }), None);
        assert_eq!(report.scenario("boom", || -> Result<()> { panic!("kaput") }), None);
        report.fail_all(&["never ran"], "setup failed");
        assert_eq!(report.count(|o| *o == Outcome::Passed), 1);
        assert_eq!(report.count(|o| matches!(o, Outcome::Failed(_))), 3);
        assert_eq!(report.results[3].1, Outcome::Failed("panicked: kaput".into()));
        assert_eq!(report.results[2].1, Outcome::Skipped("no kernel".into()));
    }
}
