//! Re-checks of deferred secrets: the message the function sends itself through the SQS delay
//! queue, and how long that message waits.
//!
//! Waiting for Secrets Manager's own retry is only safe if nothing is forgotten: every deferred
//! secret is looked at again without another event having to arrive.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::event::FailedStep;

/// SQS delivery delays range up to 15 minutes; a longer wait is chained through re-checks.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// A secret still unresolved this long after it was first deferred needs a person.
pub const MAX_DEFERRAL: TimeDelta = TimeDelta::hours(24);

/// The body of a re-check message: `{"recheck": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecheckMessage {
    pub recheck: Recheck,
}

/// Unknown fields are ignored, so that a message written by a newer version of the function
/// (during a deploy) is still read, not sent to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recheck {
    pub secret_arn: String,
    /// The stuck version seen when the secret was deferred.
    pub version_id: String,
    /// The step the failure named; it still applies when the same version is stuck.
    pub failed_step: FailedStep,
    pub first_deferred_at: DateTime<Utc>,
    /// Set for secrets an alarm deferred: their stricter minimum age (max of the grace and
    /// `RESCUE_ALARM_MIN_AGE`), which the re-check keeps applying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_seconds: Option<u64>,
}

/// How long the re-check waits: the time left until `recheck_at`, at least `min_delay` (so a
/// re-check can never spin), at most SQS's 15 minutes. Whole seconds, rounded up.
pub fn delay(now: DateTime<Utc>, recheck_at: DateTime<Utc>, min_delay: Duration) -> Duration {
    let left = (recheck_at - now).to_std().unwrap_or_default();
    let left = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
    left.max(min_delay).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 17, m, s).unwrap()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn delay_is_the_time_left_rounded_up_to_whole_seconds() {
        let recheck_at = at(10, 0) + TimeDelta::milliseconds(200);
        assert_eq!(delay(at(5, 0), recheck_at, MIN), Duration::from_secs(301));
    }

    #[test]
    fn delay_is_never_below_the_minimum() {
        assert_eq!(delay(at(5, 0), at(5, 10), MIN), MIN);
        // Already past: still the minimum, never zero.
        assert_eq!(delay(at(5, 0), at(1, 0), MIN), MIN);
    }

    #[test]
    fn delay_is_never_above_fifteen_minutes() {
        assert_eq!(delay(at(0, 0), at(59, 0), MIN), MAX_DELAY);
    }

    #[test]
    fn message_round_trips_as_json() {
        let message = RecheckMessage {
            recheck: Recheck {
                secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x".into(),
                version_id: "v2".into(),
                failed_step: FailedStep::TestSecret,
                first_deferred_at: at(0, 0),
                min_age_seconds: None,
            },
        };
        let text = serde_json::to_string(&message).unwrap();
        assert!(text.contains("\"failed_step\":\"testSecret\""), "{text}");
        assert_eq!(
            serde_json::from_str::<RecheckMessage>(&text).unwrap(),
            message
        );
    }
}
