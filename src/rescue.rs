//! For each secret: describe, decide, act, report. The only place that turns a plan into calls.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::decide::{self, Action, Cause, Decision, Goal, Home, Plan, SecretState, SkipReason};
use crate::event::FailedStep;
use crate::outcome::{Outcome, SecretReport};
use crate::queue::RecheckQueue;
use crate::recheck::{self, Recheck, RecheckMessage};
use crate::secrets::{CallError, ErrorKind, SecretsApi};
use crate::stage;

/// What one invocation needs to handle its secrets.
#[derive(Debug, Clone)]
pub struct Rescuer {
    pub api: SecretsApi,
    pub config: Config,
    pub home: Home,
    /// Where deferred secrets are sent to be re-checked; `None` when none is configured.
    pub queue: Option<RecheckQueue>,
}

impl Rescuer {
    /// Describes `secret_id`, decides, and (unless `dry_run`) carries out the plan.
    pub async fn rescue(
        &self,
        secret_id: &str,
        cause: Cause,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> SecretReport {
        let mut report = self.handle(secret_id, &cause, dry_run, now).await;
        report.failed_step = Some(cause.step_for(report.stuck_version_id.as_deref()))
            .filter(|step| *step != FailedStep::Unknown);
        report.log();
        report
    }

    async fn handle(
        &self,
        secret_id: &str,
        cause: &Cause,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> SecretReport {
        // An ARN of another account or region, or a name outside the scope prefix, is not
        // described at all.
        let early_skip = decide::foreign_arn(secret_id, &self.home)
            .or_else(|| decide::outside_name_prefix(secret_id, &self.config));
        if let Some(reason) = early_skip {
            return SecretReport::new(secret_id, Outcome::Skipped, reason.to_string());
        }
        let secret = match self.api.describe(secret_id).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                let reason = SkipReason::NotFound.to_string();
                return SecretReport::new(secret_id, Outcome::Skipped, reason);
            }
            Err(err) => return SecretReport::new(secret_id, Outcome::Failed, err.to_string()),
        };

        let decision = decide::decide(&secret, cause, &self.config, &self.home, now);
        let plan = match decision {
            Decision::Skip(reason) => {
                return SecretReport::new(&secret.arn, Outcome::Skipped, reason.to_string());
            }
            Decision::NothingToDo { reason } => {
                return SecretReport::new(&secret.arn, Outcome::NothingToDo, reason);
            }
            Decision::Deferred {
                version_id,
                reason,
                recheck_at,
                min_age,
            } => {
                let mut report = SecretReport::new(&secret.arn, Outcome::Deferred, reason);
                report.stuck_version_id = Some(version_id.clone());
                // An operator's call is answered now and never enqueues; a dry run only reads.
                if cause.is_operator() || dry_run {
                    return report;
                }
                let wait = Wait {
                    recheck_at,
                    min_age,
                };
                return self
                    .send_recheck(report, cause, version_id, wait, now)
                    .await;
            }
            Decision::Act(plan) => plan,
        };

        let mut report = planned_report(&secret.arn, &plan);
        if dry_run {
            report.outcome = Outcome::Planned;
            report.reason = format!(
                "dry run: would end {}: {}",
                goal_outcome(&plan.goal).as_str(),
                plan.reason
            );
            report.keep_label = plan.keep_label.clone();
            report.actions = plan.actions.clone();
        } else {
            report = self
                .carry_out(&secret, plan.clone(), cause, now, report)
                .await;
        }
        add_live_credential_note(&mut report, &plan);
        report
    }

    /// Sends the deferred secret's re-check, so that it is looked at again without another event
    /// having to arrive. A re-check that cannot be sent makes the secret `failed`: nothing is
    /// dropped silently.
    async fn send_recheck(
        &self,
        mut report: SecretReport,
        cause: &Cause,
        version_id: String,
        wait: Wait,
        now: DateTime<Utc>,
    ) -> SecretReport {
        // Only a deployment that never waits (RESCUE_GRACE and RESCUE_ALARM_MIN_AGE both 0)
        // runs without a queue, as the configuration enforces: its deferrals are versions of a
        // later rotation, which reports its own failure if it fails.
        let Some(queue) = &self.queue else {
            report.reason = format!(
                "{}; not re-checked: no re-check queue (RESCUE_RECHECK_QUEUE_URL) is configured",
                report.reason
            );
            return report;
        };
        let first_deferred_at = match cause {
            Cause::Recheck {
                first_deferred_at, ..
            } => *first_deferred_at,
            _ => now,
        };
        // The re-check applies max(grace, min_age): carried only when stricter than the grace.
        let min_age = Some(wait.min_age)
            .filter(|age| *age > self.config.grace)
            .map(|age| age.as_secs());
        let message = RecheckMessage {
            recheck: Recheck {
                secret_arn: report.secret_arn.clone(),
                failed_step: cause.step_for(Some(&version_id)),
                version_id,
                first_deferred_at,
                min_age_seconds: min_age,
            },
        };
        let delay = recheck::delay(now, wait.recheck_at, self.config.recheck_min_delay);
        match queue.send(&message, delay).await {
            Ok(()) => {
                report.reason = format!("{}; re-check in {} s", report.reason, delay.as_secs());
                report.recheck_in_seconds = Some(delay.as_secs());
            }
            Err(err) => {
                report.outcome = Outcome::Failed;
                report.reason = format!("{}; but {err}", report.reason);
            }
        }
        report
    }

    /// Runs the plan's actions in order. Each failure is judged by what it leaves behind.
    async fn carry_out(
        &self,
        secret: &SecretState,
        plan: Plan,
        cause: &Cause,
        now: DateTime<Utc>,
        mut report: SecretReport,
    ) -> SecretReport {
        let arn = secret.arn.as_str();
        let mut actions = plan.actions.into_iter();
        while let Some(action) = actions.next() {
            let Err(err) = self.execute(arn, &action).await else {
                record(&mut report, action);
                continue;
            };
            match (&action, &err.kind) {
                // The rescue itself is done; a missing record of it is only a warning.
                (Action::TagSecret { .. } | Action::UnmarkVersion, _) => {
                    report.warnings.push(err.to_string());
                }
                (Action::AttachLabel { label, version_id }, kind) => {
                    if matches!(
                        kind,
                        ErrorKind::InvalidRequest | ErrorKind::InvalidParameter
                    ) {
                        // Perhaps a concurrent rescue attached it, or the secret is going away.
                        match self.confirm(arn, &action, cause, now).await {
                            Confirmation::Done => {
                                record(&mut report, action);
                                continue;
                            }
                            Confirmation::Skip(reason) => return skipped(report, reason, &err),
                            Confirmation::NotDone => {}
                        }
                    }
                    let remove = Action::RemovePending {
                        version_id: version_id.clone(),
                    };
                    // Without a removal of AWSPENDING still to come, the version has no label
                    // now (the quota order, or a repair): only the marker tag names it.
                    if !actions.as_slice().contains(&remove) {
                        return unlabelled(report, label, version_id, &err);
                    }
                    // The label quota refused the keep-label: AWSPENDING must free a slot
                    // first. (The SDK counts LimitExceededException as throttling, so this
                    // arrives after its retries.)
                    if *kind == ErrorKind::LimitExceeded {
                        let rest: Vec<Action> = actions.by_ref().collect();
                        return self
                            .attach_after_freeing_slot(arn, label, version_id, rest, report)
                            .await;
                    }
                    return failed(report, &err);
                }
                (Action::MarkUnlabelledVersion { version_id }, _) => {
                    report.outcome = Outcome::NeedsAttention;
                    report.reason = format!(
                        "could not tag the secret with version {version_id} before freeing a \
                         label slot, so AWSPENDING was left in place: {err}"
                    );
                    return report;
                }
                (_, ErrorKind::InvalidRequest | ErrorKind::InvalidParameter) => {
                    // Perhaps a concurrent rescue, or a deletion, got there first: look again.
                    match self.confirm(arn, &action, cause, now).await {
                        Confirmation::Done => record(&mut report, action),
                        Confirmation::Skip(reason) => return skipped(report, reason, &err),
                        Confirmation::NotDone => return failed(report, &err),
                    }
                }
                _ => return failed(report, &err),
            }
        }
        report
    }

    /// The quota path after `AttachLabel` was refused: mark the version on the secret, remove
    /// `AWSPENDING` (which frees a slot), attach the keep-label, drop the marker.
    async fn attach_after_freeing_slot(
        &self,
        arn: &str,
        label: &str,
        version_id: &str,
        rest: Vec<Action>,
        report: SecretReport,
    ) -> SecretReport {
        let mut report = report;
        report.warnings.push(format!(
            "the 20-label quota refused {label}: AWSPENDING is removed first"
        ));
        let mark = Action::MarkUnlabelledVersion {
            version_id: version_id.to_owned(),
        };
        let remove = Action::RemovePending {
            version_id: version_id.to_owned(),
        };
        let attach = Action::AttachLabel {
            label: label.to_owned(),
            version_id: version_id.to_owned(),
        };
        // The remove that the original plan had next is the one done here.
        let rest: Vec<Action> = rest
            .into_iter()
            .filter(|action| *action != remove && *action != Action::UnmarkVersion)
            .collect();

        if let Err(err) = self.execute(arn, &mark).await {
            report.outcome = Outcome::NeedsAttention;
            report.reason = format!(
                "the label quota refused {label}, and the secret could not be tagged with \
                 version {version_id}, so AWSPENDING was left in place: {err}"
            );
            return report;
        }
        report.actions.push(mark);
        if let Err(err) = self.execute(arn, &remove).await {
            return failed(report, &err);
        }
        report.actions.push(remove);
        if let Err(err) = self.execute(arn, &attach).await {
            return unlabelled(report, label, version_id, &err);
        }
        record(&mut report, attach);
        for action in std::iter::once(Action::UnmarkVersion).chain(rest) {
            match self.execute(arn, &action).await {
                Ok(()) => report.actions.push(action),
                Err(err) => report.warnings.push(err.to_string()),
            }
        }
        report
    }

    /// After a conflict answer, re-describes the secret: is what `action` was meant to achieve
    /// already true?
    async fn confirm(
        &self,
        arn: &str,
        action: &Action,
        cause: &Cause,
        now: DateTime<Utc>,
    ) -> Confirmation {
        let secret = match self.api.describe(arn).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Confirmation::Skip(SkipReason::NotFound),
            Err(_) => return Confirmation::NotDone,
        };
        if let Decision::Skip(reason) =
            decide::decide(&secret, cause, &self.config, &self.home, now)
        {
            return Confirmation::Skip(reason);
        }
        let stages = |version_id: &str| secret.versions.get(version_id).map(|v| &v.stages);
        let done = match action {
            Action::CancelRotation => secret.rotation_enabled != Some(true),
            Action::AttachLabel { label, version_id } => {
                stages(version_id).is_some_and(|s| s.contains(label))
            }
            Action::RemovePending { version_id } => {
                stages(version_id).is_none_or(|s| !s.contains(stage::PENDING))
            }
            _ => false,
        };
        if done {
            Confirmation::Done
        } else {
            Confirmation::NotDone
        }
    }

    async fn execute(&self, arn: &str, action: &Action) -> Result<(), CallError> {
        tracing::debug!(secret_arn = arn, action = action.name(), "calling");
        match action {
            Action::CancelRotation => self.api.cancel_rotation(arn).await,
            Action::MarkUnlabelledVersion { version_id } => {
                let tags = [(
                    decide::tag::UNLABELLED_VERSION.to_owned(),
                    version_id.clone(),
                )];
                self.api.tag(arn, &tags.into_iter().collect()).await
            }
            Action::AttachLabel { label, version_id } => {
                self.api.attach_label(arn, label, version_id).await
            }
            Action::RemovePending { version_id } => {
                self.api.remove_label(arn, stage::PENDING, version_id).await
            }
            Action::UnmarkVersion => self.api.untag(arn, decide::tag::UNLABELLED_VERSION).await,
            Action::TagSecret { tags } => self.api.tag(arn, tags).await,
        }
    }
}

/// When a deferred secret is due, and the minimum age its re-check keeps applying.
struct Wait {
    recheck_at: DateTime<Utc>,
    min_age: Duration,
}

enum Confirmation {
    Done,
    NotDone,
    Skip(SkipReason),
}

fn goal_outcome(goal: &Goal) -> Outcome {
    match goal {
        Goal::Rescued => Outcome::Rescued,
        Goal::NeedsAttention => Outcome::NeedsAttention,
    }
}

/// The report a plan ends in when every action succeeds. The keep-label is reported once
/// attached (or at once when the version already carries it).
fn planned_report(arn: &str, plan: &Plan) -> SecretReport {
    let mut report = SecretReport::new(arn, goal_outcome(&plan.goal), plan.reason.clone());
    report.stuck_version_id = plan.stuck_version_id.clone();
    let attaches = |label: &String| {
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::AttachLabel { label: l, .. } if l == label))
    };
    report.keep_label = plan.keep_label.clone().filter(|label| !attaches(label));
    report
}

/// Says so when the kept (or stuck) version may hold the credential the target system uses.
fn add_live_credential_note(report: &mut SecretReport, plan: &Plan) {
    let Some(version_id) = plan.stuck_version_id.as_deref() else {
        return;
    };
    if !plan.may_hold_live_credential || report.outcome == Outcome::Skipped {
        return;
    }
    let place = match &report.keep_label {
        Some(label) => format!("version {version_id} (label {label})"),
        None => format!("version {version_id}"),
    };
    report.live_credential_note = Some(format!(
        "the failed step may have changed the target system: {place} may hold the credential \
         in use; check it before deleting it"
    ));
}

/// Adds a completed action to the report; an attached label is the keep-label from then on.
fn record(report: &mut SecretReport, action: Action) {
    if let Action::AttachLabel { label, .. } = &action {
        report.keep_label = Some(label.clone());
    }
    report.actions.push(action);
}

/// `AWSPENDING` is gone but the keep-label could not be attached: the version has no label, and
/// only the marker tag names it. A refusal by the quota needs a person; anything else is retried
/// (the retry re-attaches the label by id from the marker).
fn unlabelled(
    mut report: SecretReport,
    label: &str,
    version_id: &str,
    err: &CallError,
) -> SecretReport {
    report.outcome = match err.kind {
        ErrorKind::LimitExceeded => Outcome::NeedsAttention,
        _ => Outcome::Failed,
    };
    report.reason = format!(
        "{label} could not be attached: version {version_id} has no label; the secret's tag {} \
         names it; re-label it by id: {err}",
        decide::tag::UNLABELLED_VERSION
    );
    report
}

fn skipped(mut report: SecretReport, reason: SkipReason, err: &CallError) -> SecretReport {
    report.outcome = Outcome::Skipped;
    report.reason = format!("{reason} (found after {err})");
    report
}

fn failed(mut report: SecretReport, err: &CallError) -> SecretReport {
    report.outcome = Outcome::Failed;
    report.reason = if report.actions.is_empty() {
        err.to_string()
    } else {
        let done: Vec<&str> = report.actions.iter().map(Action::name).collect();
        format!("{err} (after {})", done.join(", "))
    };
    report
}
