//! rotation-rescue: answers a failed AWS Secrets Manager rotation.
//!
//! The flow is one way, one module per step:
//!
//! ```text
//! raw JSON ─► event ─► rescue ─► outcome
//!                      │    ▲
//!                      ▼    │
//!                 secrets  decide
//! ```
//!
//! * [`event`] tells which trigger a payload is, or says clearly why it is none.
//! * [`decide`] is pure: a described secret, the trigger and the clock in, a plan out.
//! * [`secrets`] is the only module that talks to Secrets Manager.
//! * [`rescue`] runs describe → decide → act for each secret.
//! * [`outcome`] is what is reported: one line per secret and the summary.
//! * [`config`] is read once at start and passed in.

pub mod alarm;
pub mod config;
pub mod decide;
pub mod event;
pub mod handler;
pub mod outcome;
pub mod queue;
pub mod recheck;
pub mod rescue;
pub mod secrets;

/// The staging labels that Secrets Manager itself manages.
pub mod stage {
    pub const CURRENT: &str = "AWSCURRENT";
    pub const PENDING: &str = "AWSPENDING";
    pub const PREVIOUS: &str = "AWSPREVIOUS";

    /// True for the three labels that rotation moves by itself.
    pub fn is_aws_managed(label: &str) -> bool {
        matches!(label, CURRENT | PENDING | PREVIOUS)
    }
}
