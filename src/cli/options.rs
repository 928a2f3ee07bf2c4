//! Option values checked before any work: each bad value gets its own line
//! saying what was given and what is allowed (clap has already refused the
//! ones that do not parse as their type). Exit status 2.

/// The problems of one command's options, in the order they were checked.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, option: &str, given: impl std::fmt::Display, allowed: &str) {
        let dashes = if option.len() == 1 { "-" } else { "--" };
        self.0.push(format!("{dashes}{option} {given}: {allowed}"));
    }

    /// A learning rate, a temperature: finite and > 0.
    pub fn positive(&mut self, option: &str, v: f64) -> &mut Self {
        if !(v.is_finite() && v > 0.0) {
            self.push(option, v, "expected a finite number greater than 0");
        }
        self
    }

    /// An L2 weight, a clipping norm: finite and >= 0 (0 turns it off).
    pub fn non_negative(&mut self, option: &str, v: f64) -> &mut Self {
        if !(v.is_finite() && v >= 0.0) {
            self.push(
                option,
                v,
                "expected a finite number, 0 or greater (0 turns it off)",
            );
        }
        self
    }

    /// A count: at least 1.
    pub fn at_least_one(&mut self, option: &str, v: u64) -> &mut Self {
        self.at_least(option, v, 1)
    }

    /// A count of at least `min`.
    pub fn at_least(&mut self, option: &str, v: u64, min: u64) -> &mut Self {
        if v < min {
            self.push(option, v, &format!("expected {min} or more"));
        }
        self
    }

    pub fn at_least_one_if_given(&mut self, option: &str, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.at_least_one(option, v),
            None => self,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Prints every problem; the exit status of a usage error.
    pub fn report(&self) -> std::process::ExitCode {
        for p in &self.0 {
            eprintln!("error: {p}");
        }
        std::process::ExitCode::from(super::EXIT_IO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_gets_its_own_line_and_good_ones_none() {
        let mut p = Problems::default();
        p.positive("lr", 1e-3)
            .non_negative("l2", 0.0)
            .at_least_one("batch", 1)
            .at_least_one_if_given("steps", None);
        assert!(p.is_empty());
        p.positive("lr", f64::NAN)
            .positive("temperature", -1.0)
            .positive("temperature", f64::INFINITY)
            .non_negative("l2", -1.0)
            .non_negative("clip", f64::NAN)
            .at_least_one("batch", 0)
            .at_least_one_if_given("steps", Some(0));
        assert_eq!(
            p.0,
            vec![
                "--lr NaN: expected a finite number greater than 0",
                "--temperature -1: expected a finite number greater than 0",
                "--temperature inf: expected a finite number greater than 0",
                "--l2 -1: expected a finite number, 0 or greater (0 turns it off)",
                "--clip NaN: expected a finite number, 0 or greater (0 turns it off)",
                "--batch 0: expected 1 or more",
                "--steps 0: expected 1 or more",
            ]
        );
    }
}
