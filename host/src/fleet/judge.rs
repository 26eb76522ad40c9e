//! The canary's judge: from what the whole fleet counted for a canary
//! version (requests, failures, answers slower than `CANARY_MAX_P95_MS`),
//! roll it back, promote it, or keep watching.
//!
//! The rule. A canary is rolled back as soon as the data say, with 95 %
//! confidence, that it is worse than an objective: it failed at least
//! [`MIN_EVIDENCE`] requests and the one-sided 95 % Wilson lower bound of
//! its error rate is over `CANARY_MAX_ERROR_RATE`, or the same holds for
//! its slow answers against 5 % (its p95 is then over `CANARY_MAX_P95_MS`).
//! Wilson's bound, unlike the normal approximation, holds for small samples
//! and for rates near 0 and 1, which is exactly where a canary starts: a
//! version that fails every request is rolled back on its third failure
//! (3 of 3 gives a bound of 52 %), while a healthy one with a rare failure
//! (1 in 200) is not (its bound is 0.11 %). The minimum of three failures
//! is there because the judge looks again every tick: one unlucky 503
//! among a healthy canary's first twenty requests (1 of 20: a bound of
//! 1.1 %) would otherwise roll back about one canary in eight that fails
//! 0.5 % of its requests before it reaches 100; with three, about one in
//! seventy (simulated: 12 % and 1.4 %), and a failing one costs two more
//! failed requests.
//! It is promoted once it has served `CANARY_MIN_REQUESTS` with its
//! measured error rate and slow share within the objectives; one that has
//! neither after `CANARY_MAX_S` is rolled back (abandoned).

use std::time::Duration;

use crate::runtime::Counts;

/// z for a one-sided 95 % bound.
const Z: f64 = 1.6449;

/// The share of answers that may be slower than the p95 objective.
const SLOW_SHARE: f64 = 0.05;

/// Failed (or slow) requests a rollback needs at least.
pub const MIN_EVIDENCE: u64 = 3;

/// What a canary must meet (`CANARY_*`).
#[derive(Debug, Clone)]
pub struct Objectives {
    pub max_error_rate: f64,
    pub max_p95: Duration,
    pub min_requests: u64,
    pub max_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Watch,
    Promote(String),
    RollBack(String),
}

/// Judge a canary that has counted `counts` over `elapsed`.
pub fn judge(counts: Counts, elapsed: Duration, objectives: &Objectives) -> Verdict {
    let n = counts.requests;
    let p95_ms = objectives.max_p95.as_millis();
    let error_bound = lower_bound(counts.errors, n);
    if counts.errors >= MIN_EVIDENCE && error_bound > objectives.max_error_rate {
        return Verdict::RollBack(format!(
            "{} of {n} requests failed ({}); with 95% confidence its error rate is at least {}, over CANARY_MAX_ERROR_RATE {}",
            counts.errors,
            percent(ratio(counts.errors, n)),
            percent(error_bound),
            percent(objectives.max_error_rate),
        ));
    }
    let slow_bound = lower_bound(counts.slow, n);
    if counts.slow >= MIN_EVIDENCE && slow_bound > SLOW_SHARE {
        return Verdict::RollBack(format!(
            "{} of {n} requests took over {p95_ms} ms ({}); with 95% confidence over 5% do, so its p95 is over CANARY_MAX_P95_MS {p95_ms}",
            counts.slow,
            percent(ratio(counts.slow, n)),
        ));
    }
    let within = ratio(counts.errors, n) <= objectives.max_error_rate && ratio(counts.slow, n) <= SLOW_SHARE;
    if n >= objectives.min_requests && within {
        return Verdict::Promote(format!(
            "served {n} requests (CANARY_MIN_REQUESTS {}): {} failed ({}, CANARY_MAX_ERROR_RATE {}), {} took over {p95_ms} ms ({}, at most 5% for the p95)",
            objectives.min_requests,
            counts.errors,
            percent(ratio(counts.errors, n)),
            percent(objectives.max_error_rate),
            counts.slow,
            percent(ratio(counts.slow, n)),
        ));
    }
    if elapsed >= objectives.max_duration {
        return Verdict::RollBack(format!(
            "abandoned after CANARY_MAX_S {} s: {n} requests ({} failed, {} over {p95_ms} ms), not {} within the objectives",
            objectives.max_duration.as_secs(),
            counts.errors,
            counts.slow,
            objectives.min_requests,
        ));
    }
    Verdict::Watch
}

/// The one-sided 95 % Wilson lower bound of `hits / n` (0 with no data).
pub fn lower_bound(hits: u64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (n, p) = (n as f64, ratio(hits, n));
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

fn ratio(hits: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { hits as f64 / n as f64 }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objectives() -> Objectives {
        Objectives {
            max_error_rate: 0.01,
            max_p95: Duration::from_millis(500),
            min_requests: 100,
            max_duration: Duration::from_secs(600),
        }
    }

    fn counts(requests: u64, errors: u64, slow: u64) -> Counts {
        Counts { requests, errors, slow }
    }

    fn verdict(requests: u64, errors: u64, slow: u64) -> Verdict {
        judge(counts(requests, errors, slow), Duration::from_secs(1), &objectives())
    }

    #[test]
    fn the_wilson_bound_matches_its_closed_form_and_known_values() {
        // All n failed: n / (n + z²).
        for n in [1_u64, 2, 10, 1000] {
            let expected = n as f64 / (n as f64 + Z * Z);
            assert!((lower_bound(n, n) - expected).abs() < 1e-12, "n = {n}");
        }
        assert_eq!(lower_bound(0, 0), 0.0);
        assert_eq!(lower_bound(0, 500), 0.0);
        // 1 in 200: well under 1 %.
        assert!((lower_bound(1, 200) - 0.0011).abs() < 0.0001);
        // 10 in 100 (10 %): the bound is about 6 %.
        assert!((lower_bound(10, 100) - 0.0608).abs() < 0.001, "{}", lower_bound(10, 100));
    }

    #[test]
    fn a_version_that_fails_every_request_is_rolled_back_on_its_third_failure() {
        assert_eq!(verdict(0, 0, 0), Verdict::Watch);
        assert_eq!(verdict(2, 2, 0), Verdict::Watch);
        let Verdict::RollBack(reason) = verdict(3, 3, 0) else { panic!("not rolled back") };
        assert!(reason.starts_with("3 of 3 requests failed (100.00%)"), "{reason}");
    }

    #[test]
    fn one_unlucky_failure_early_does_not_roll_a_healthy_version_back() {
        // 1 of 20 alone would put the bound over 1 %.
        assert!(lower_bound(1, 20) > 0.01);
        assert_eq!(verdict(20, 1, 0), Verdict::Watch);
        assert_eq!(verdict(20, 2, 0), Verdict::Watch);
    }

    #[test]
    fn a_healthy_version_is_promoted_at_the_minimum_and_not_before() {
        assert_eq!(verdict(99, 0, 0), Verdict::Watch);
        assert!(matches!(verdict(100, 0, 0), Verdict::Promote(_)));
        // One failure in 200 is within 1 %: neither rolled back nor held.
        assert!(matches!(verdict(200, 1, 0), Verdict::Promote(_)));
    }

    #[test]
    fn a_rate_over_the_objective_without_the_evidence_waits_for_more() {
        // 2 of 100 is over 1 %, but not with 95 % confidence.
        assert!(lower_bound(2, 100) < 0.01);
        assert_eq!(verdict(100, 2, 0), Verdict::Watch);
        // Over the objective with the evidence: rolled back.
        assert!(matches!(verdict(100, 6, 0), Verdict::RollBack(_)));
    }

    #[test]
    fn a_slow_version_is_rolled_back_on_its_p95() {
        let Verdict::RollBack(reason) = verdict(20, 0, 20) else { panic!("not rolled back") };
        assert!(reason.contains("CANARY_MAX_P95_MS 500"), "{reason}");
        // 4 % slow is within the p95 objective.
        assert!(matches!(verdict(1000, 0, 40), Verdict::Promote(_)));
    }

    #[test]
    fn a_canary_that_never_meets_the_minimum_is_abandoned_at_its_time_limit() {
        let late = judge(counts(10, 0, 0), Duration::from_secs(600), &objectives());
        let Verdict::RollBack(reason) = late else { panic!("not abandoned") };
        assert!(reason.starts_with("abandoned after CANARY_MAX_S 600 s"), "{reason}");
        assert_eq!(judge(counts(10, 0, 0), Duration::from_secs(599), &objectives()), Verdict::Watch);
    }
}
