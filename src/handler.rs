//! The entry point, as a table of contents: parse the trigger, rescue each secret, report.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use thiserror::Error;

use crate::alarm::{Alarm, FunctionRef};
use crate::config::Config;
use crate::decide::{ArnParts, Cause, Home};
use crate::event::{self, EventError, RecheckRecord, Trigger};
use crate::outcome::{AlarmReport, Outcome, SecretReport, Summary};
use crate::queue::RecheckQueue;
use crate::rescue::Rescuer;
use crate::secrets::{CallError, RESCUE_BUDGET, SecretsApi};

/// Why an invocation is reported as failed. Lambda shows the variant as `errorType`.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// Nothing was touched: the payload is not one this function accepts.
    #[error(transparent)]
    InvalidEvent(#[from] EventError),
    /// The secrets of an alarmed function could not be listed; Lambda retries the alarm.
    #[error("could not list the secrets of the alarmed functions: {0}")]
    ListingFailed(#[source] CallError),
    /// An event trigger left secrets `failed`; the error makes Lambda retry the event.
    #[error("{failed} of {total} secrets failed; first: {first}")]
    SecretsFailed {
        failed: usize,
        total: usize,
        first: String,
    },
}

impl From<HandlerError> for Diagnostic {
    fn from(err: HandlerError) -> Diagnostic {
        let error_type = match err {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::SecretsFailed { .. } => "SecretsFailed",
            HandlerError::ListingFailed(_) => "ListingFailed",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// Long-lived state, built once per cold start.
#[derive(Debug, Clone)]
pub struct App {
    pub api: SecretsApi,
    pub config: Config,
    pub queue: Option<RecheckQueue>,
}

impl App {
    pub fn new(api: SecretsApi, config: Config) -> Self {
        App {
            api,
            config,
            queue: None,
        }
    }

    /// Sends deferred secrets' re-checks to `queue`.
    pub fn with_queue(mut self, queue: RecheckQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Handles one invocation. `invoked_function_arn` comes from the Lambda context; it may be a
    /// placeholder (local emulators pass `function-arn`), in which case the account comes from
    /// `RESCUE_ACCOUNT_ID`.
    pub async fn handle(
        &self,
        raw: &Value,
        invoked_function_arn: &str,
        now: DateTime<Utc>,
    ) -> Result<Summary, HandlerError> {
        self.handle_until(raw, invoked_function_arn, now, None)
            .await
    }

    /// As [`App::handle`], starting no new secret when less than [`RESCUE_BUDGET`] is left
    /// before `deadline` (`None`: unknown).
    pub async fn handle_until(
        &self,
        raw: &Value,
        invoked_function_arn: &str,
        now: DateTime<Utc>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Summary, HandlerError> {
        let trigger = event::parse(raw).inspect_err(|err| {
            tracing::error!(error = %err, "payload rejected");
        })?;
        let rescuer = Rescuer {
            api: self.api.clone(),
            config: self.config.clone(),
            home: self.home(invoked_function_arn),
            queue: self.queue.clone(),
        };

        let summary = match &trigger {
            Trigger::RotationFailed(failed) => {
                let cause = Cause::RotationFailed {
                    failed_at: failed.failed_at,
                    step: failed.step,
                };
                let report = rescuer
                    .rescue(&failed.secret_id, cause, self.config.dry_run, now)
                    .await;
                Summary::new("rotation_failed", self.config.dry_run, vec![report])
            }
            Trigger::OtherServiceEvent {
                event_name,
                secret_id,
            } => {
                let reports = secret_id.iter().map(|id| {
                    let reason = format!("{event_name} needs nothing; only RotationFailed acts");
                    SecretReport::new(id, Outcome::NothingToDo, reason)
                });
                Summary::new(event_name, self.config.dry_run, reports.collect())
            }
            Trigger::Operator(request) => {
                let dry_run = self.config.dry_run || request.dry_run;
                let mut reports = Vec::new();
                for secret_id in unique(&request.secrets) {
                    let cause = Cause::Operator {
                        force: request.force,
                    };
                    reports.push(
                        rescue_in_time(&rescuer, secret_id, cause, dry_run, now, deadline).await,
                    );
                }
                Summary::new("operator", dry_run, reports)
            }
            Trigger::Alarm(alarms) => alarm_fan_out(&rescuer, alarms, now, deadline).await?,
            Trigger::Recheck(records) => {
                let summary = recheck_batch(&rescuer, records, now, deadline).await;
                log_summary(&summary);
                // Partial batch answer: only the listed messages come back to be retried.
                return Ok(summary);
            }
        };

        log_summary(&summary);
        // An operator's call is synchronous: the summary, failures included, is the answer.
        if trigger.is_operator() {
            return Ok(summary);
        }
        let first = summary
            .failed()
            .next()
            .map(|first| format!("{}: {}", first.secret_arn, first.reason));
        match first {
            None => Ok(summary),
            Some(first) => Err(HandlerError::SecretsFailed {
                failed: summary.failed().count(),
                total: summary.secrets.len(),
                first,
            }),
        }
    }

    fn home(&self, invoked_function_arn: &str) -> Home {
        let from_context = ArnParts::parse(invoked_function_arn)
            .filter(|arn| arn.service == "lambda")
            .map(|arn| arn.account)
            .filter(|account| account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned);
        Home {
            account: from_context.or_else(|| self.config.account_id.clone()),
            region: self.config.region.clone(),
        }
    }
}

/// How many secrets of an alarm are handled at once. Mutating calls are paced separately
/// (`RESCUE_MAX_RATE`); this bounds the describes in flight and the memory they hold.
pub const FAN_OUT_CONCURRENCY: usize = 8;

/// Resolves each alarm to its rotation functions, lists the secrets they rotate, and rescues
/// each (bounded concurrency, paced mutating calls, within the deadline).
async fn alarm_fan_out(
    rescuer: &Rescuer,
    alarms: &[Alarm],
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> Result<Summary, HandlerError> {
    let mut alarm_reports = Vec::new();
    let mut functions: Vec<FunctionRef> = Vec::new();
    let mut names = Vec::new();
    for alarm in alarms {
        let (report, resolved) = resolve(alarm, &rescuer.config);
        if report.outcome == "unresolved" {
            tracing::error!(alarm = %alarm.name, reason = %report.reason, "alarm unresolved");
        }
        if !resolved.is_empty() {
            names.push(alarm.name.clone());
        }
        functions.extend(resolved);
        alarm_reports.push(report);
    }

    let dry_run = rescuer.config.dry_run;
    let mut targets = Vec::new();
    if !functions.is_empty() {
        let listed = rescuer
            .api
            .list_secrets()
            .await
            .map_err(HandlerError::ListingFailed)?;
        // The listing's labels lag by minutes: every match is described and decided afresh.
        targets = listed
            .into_iter()
            .filter(|s| {
                let rotator = s.rotation_lambda_arn.as_deref().unwrap_or_default();
                functions.iter().any(|f| f.matches(rotator))
            })
            .map(|s| s.arn)
            .collect();
    }

    let cause = Cause::Alarm {
        alarm_name: names.join(","),
        functions,
    };
    let reports: Vec<SecretReport> = stream::iter(targets)
        .map(|arn| {
            let cause = cause.clone();
            async move { rescue_in_time(rescuer, &arn, cause, dry_run, now, deadline).await }
        })
        .buffered(FAN_OUT_CONCURRENCY)
        .collect()
        .await;

    let delivery = alarms.first().map_or("alarm", |a| a.delivery.as_str());
    let mut summary = Summary::new(delivery, dry_run, reports);
    summary.alarms = alarm_reports;
    Ok(summary)
}

/// The rotation functions an alarm stands for: its `AWS/Lambda` `FunctionName` dimensions, else
/// its entry in `RESCUE_ALARM_FUNCTIONS`. A plain function name is taken to live in the alarm's
/// own region and account.
fn resolve(alarm: &Alarm, config: &Config) -> (AlarmReport, Vec<FunctionRef>) {
    let mut report = AlarmReport {
        alarm_name: alarm.name.clone(),
        delivery: alarm.delivery.as_str().to_owned(),
        state: alarm.state.clone(),
        outcome: "resolved".to_owned(),
        reason: String::new(),
        functions: Vec::new(),
    };
    if !alarm.is_transition_into_alarm() {
        report.outcome = "nothing_to_do".to_owned();
        report.reason = format!(
            "{} -> {}: only a transition into ALARM acts",
            alarm.previous_state.as_deref().unwrap_or("?"),
            alarm.state
        );
        return (report, Vec::new());
    }
    let (names, source) = if !alarm.functions.is_empty() {
        (alarm.functions.clone(), "its FunctionName dimensions")
    } else if let Some(mapped) = config.alarm_functions.get(&alarm.name) {
        (mapped.clone(), "RESCUE_ALARM_FUNCTIONS")
    } else {
        report.outcome = "unresolved".to_owned();
        report.reason = format!(
            "{} names no AWS/Lambda FunctionName dimension, and RESCUE_ALARM_FUNCTIONS has no \
             entry for it: nothing done",
            if alarm.composite {
                "a composite alarm"
            } else {
                "the alarm"
            }
        );
        return (report, Vec::new());
    };
    let place = alarm.region_and_account();
    let functions: Vec<FunctionRef> = names
        .iter()
        .filter_map(|name| FunctionRef::parse(name))
        .map(|mut function| {
            if let (None, Some((region, account))) = (&function.region, place) {
                function.region = Some(region.to_owned());
                function.account = Some(account.to_owned());
            }
            function
        })
        .collect();
    report.functions = names;
    report.reason = format!("resolved through {source}");
    (report, functions)
}

/// Re-checks each record's secret; a record whose message is malformed, or whose secret failed
/// or was not reached, is listed for SQS to deliver again (and, past the queue's
/// `maxReceiveCount`, to move to its dead-letter queue).
async fn recheck_batch(
    rescuer: &Rescuer,
    records: &[RecheckRecord],
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> Summary {
    let dry_run = rescuer.config.dry_run;
    let mut reports = Vec::new();
    let mut retry = Vec::new();
    for record in records {
        let report = match &record.message {
            Err(problem) => {
                let reason = format!("re-check message {}: {problem}", record.message_id);
                let report = SecretReport::new("-", Outcome::Failed, reason);
                report.log();
                report
            }
            Ok(recheck) => {
                let cause = Cause::Recheck {
                    version_id: recheck.version_id.clone(),
                    step: recheck.failed_step,
                    first_deferred_at: recheck.first_deferred_at,
                    min_age: Duration::from_secs(recheck.min_age_seconds.unwrap_or(0)),
                };
                let arn = &recheck.secret_arn;
                rescue_in_time(rescuer, arn, cause, dry_run, now, deadline).await
            }
        };
        if matches!(report.outcome, Outcome::Failed | Outcome::NotReached) {
            retry.push(record.message_id.clone());
        }
        reports.push(report);
    }
    let mut summary = Summary::new("recheck", dry_run, reports);
    summary.batch_item_failures = Some(retry);
    summary
}

fn log_summary(summary: &Summary) {
    tracing::info!(
        trigger = %summary.trigger,
        dry_run = summary.dry_run,
        counts = ?summary.counts,
        "invocation handled"
    );
}

/// Rescues `secret_id` if one more rescue fits before `deadline`, else reports it `not_reached`
/// without a call.
async fn rescue_in_time(
    rescuer: &Rescuer,
    secret_id: &str,
    cause: Cause,
    dry_run: bool,
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> SecretReport {
    if !time_for_one_more(deadline) {
        return not_reached(secret_id);
    }
    rescuer.rescue(secret_id, cause, dry_run, now).await
}

/// Whether one more rescue fits before `deadline`, read from the clock now.
fn time_for_one_more(deadline: Option<DateTime<Utc>>) -> bool {
    let Some(deadline) = deadline else {
        return true;
    };
    let left = (deadline - Utc::now()).to_std().unwrap_or_default();
    left >= RESCUE_BUDGET
}

fn not_reached(secret_id: &str) -> SecretReport {
    let reason = format!(
        "not started: less than {} s of the invocation was left",
        RESCUE_BUDGET.as_secs()
    );
    let report = SecretReport::new(secret_id, Outcome::NotReached, reason);
    report.log();
    report
}

/// The invocation's deadline from the Lambda context (milliseconds since the epoch). A deadline
/// already past, as local emulators send, means unknown rather than none left.
pub fn deadline_from_context(deadline_ms: u64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let deadline = DateTime::from_timestamp_millis(i64::try_from(deadline_ms).ok()?)?;
    (deadline > now).then_some(deadline)
}

/// The secrets in the order given, each once.
fn unique(secrets: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| seen.insert(*s))
        .collect()
}
