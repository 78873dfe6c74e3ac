//! How long a failing object waits before its next pass: 5 s after the first failure,
//! doubling with each consecutive one, at most 5 minutes; a success starts it over. One
//! policy for the Shorteners and the ShortLinks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const BASE: Duration = Duration::from_secs(5);
pub const MAX: Duration = Duration::from_secs(300);

/// Consecutive failures by object key.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The object passed: its next failure waits [`BASE`] again.
    pub fn reset(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// The object failed once more: how long it waits.
    pub fn next(&self, key: &str) -> Duration {
        let attempts = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_string()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        BASE.saturating_mul(factor).min(MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_five_seconds_up_to_five_minutes_and_starts_over_after_a_pass() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next("a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.next("b"), BASE, "per object");
        for _ in 0..100 {
            backoff.next("a");
        }
        assert_eq!(backoff.next("a"), MAX);
        backoff.reset("a");
        assert_eq!(backoff.next("a"), BASE);
    }
}
