//! What is reported: one [`SecretReport`] per secret, logged as one structured line, and the
//! [`Summary`] the invocation returns.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde::Serialize;

use crate::decide::Action;
use crate::event::FailedStep;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rotation cancelled, the stuck version kept under a label, `AWSPENDING` removed.
    Rescued,
    /// Left unchanged for now: the stuck version belongs to a later rotation.
    Deferred,
    /// Nothing is stuck.
    NothingToDo,
    /// Not this function's business (see the reason); not an error.
    Skipped,
    /// A state the function will not resolve alone; the reason says what a person should do.
    NeedsAttention,
    /// Dry run: `actions` lists what would have been done.
    Planned,
    /// A call failed; the reason names it. The secret is no worse than the failure left it.
    Failed,
    /// Not started: too little of the invocation was left for one more rescue.
    NotReached,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rescued => "rescued",
            Outcome::Deferred => "deferred",
            Outcome::NothingToDo => "nothing_to_do",
            Outcome::Skipped => "skipped",
            Outcome::NeedsAttention => "needs_attention",
            Outcome::Planned => "planned",
            Outcome::Failed => "failed",
            Outcome::NotReached => "not_reached",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretReport {
    /// The secret's ARN once described; the identifier as given when it was not found.
    pub secret_arn: String,
    pub outcome: Outcome,
    pub reason: String,
    /// Mutating calls made, in order (planned ones in a dry run).
    pub actions: Vec<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck_version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<FailedStep>,
    /// Set when a version was kept and the failed step says the target system may already use
    /// it: do not delete the kept version before checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_credential_note: Option<String>,
    /// Deferred and sent to be re-checked after this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck_in_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl SecretReport {
    pub fn new(secret_arn: impl Into<String>, outcome: Outcome, reason: impl Into<String>) -> Self {
        SecretReport {
            secret_arn: secret_arn.into(),
            outcome,
            reason: reason.into(),
            actions: Vec::new(),
            stuck_version_id: None,
            keep_label: None,
            failed_step: None,
            live_credential_note: None,
            recheck_in_seconds: None,
            warnings: Vec::new(),
        }
    }

    /// One structured log line: constant message, fields for the facts. Never a secret value.
    pub fn log(&self) {
        let actions: Vec<&str> = self.actions.iter().map(Action::name).collect();
        let actions = actions.join(",");
        // Event triggers are invoked asynchronously: the log is where the note and the warnings
        // reach a person.
        let warnings = self.warnings.join("; ");
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    secret_arn = %self.secret_arn,
                    outcome = self.outcome.as_str(),
                    reason = %self.reason,
                    actions = %actions,
                    stuck_version_id = self.stuck_version_id.as_deref(),
                    keep_label = self.keep_label.as_deref(),
                    failed_step = self.failed_step.map(FailedStep::as_str),
                    live_credential_note = self.live_credential_note.as_deref(),
                    warnings = %warnings,
                    "secret handled"
                )
            };
        }
        match self.outcome {
            Outcome::Failed | Outcome::NotReached => line!(error),
            Outcome::NeedsAttention => line!(warn),
            _ if !self.warnings.is_empty() => line!(warn),
            _ => line!(info),
        }
    }
}

/// What an alarm came to, before any secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmReport {
    pub alarm_name: String,
    /// `alarm_eventbridge`, `alarm_action` or `alarm_sns`.
    pub delivery: String,
    pub state: String,
    /// `resolved`, `unresolved` (no function found: nothing done), or `nothing_to_do`.
    pub outcome: String,
    pub reason: String,
    /// The rotation functions it resolved to.
    pub functions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// What triggered the invocation: `rotation_failed`, `operator`, or the service event name.
    pub trigger: String,
    pub dry_run: bool,
    /// How many secrets ended with each outcome.
    pub counts: BTreeMap<Outcome, usize>,
    pub secrets: Vec<SecretReport>,
    /// For alarm triggers: what each alarm resolved to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<AlarmReport>,
    /// For a batch from the re-check queue: the message ids SQS should deliver again.
    #[serde(skip)]
    pub batch_item_failures: Option<Vec<String>>,
}

impl Summary {
    pub fn new(trigger: impl Into<String>, dry_run: bool, secrets: Vec<SecretReport>) -> Self {
        let mut counts = BTreeMap::new();
        for report in &secrets {
            *counts.entry(report.outcome).or_insert(0) += 1;
        }
        Summary {
            trigger: trigger.into(),
            dry_run,
            counts,
            secrets,
            alarms: Vec::new(),
            batch_item_failures: None,
        }
    }

    /// What the invocation returns: for a re-check batch, exactly SQS's partial batch response
    /// (`{"batchItemFailures": [{"itemIdentifier": ...}]}`), else the summary itself.
    pub fn response(&self) -> serde_json::Value {
        let value = match &self.batch_item_failures {
            Some(ids) => {
                let mut response = SqsBatchResponse::default();
                response.batch_item_failures = ids
                    .iter()
                    .map(|id| {
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = id.clone();
                        failure
                    })
                    .collect();
                serde_json::to_value(response)
            }
            None => serde_json::to_value(self),
        };
        // Plain structs of strings and numbers: serializing them cannot fail.
        value.unwrap_or_default()
    }

    /// The secrets that a retry of the invocation would still have to handle.
    pub fn failed(&self) -> impl Iterator<Item = &SecretReport> {
        self.secrets
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::NotReached))
    }
}
