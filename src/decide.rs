//! The decision, and nothing else: a described secret, the trigger's cause, the settings and the
//! clock in; a [`Decision`] out. No I/O here, so every rule is tested without a network.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::alarm::FunctionRef;
use crate::config::Config;
use crate::event::FailedStep;
use crate::recheck::MAX_DEFERRAL;
use crate::stage;

/// Secrets Manager allows 20 staging labels per secret, across all versions (AWS-FACTS 4).
pub const MAX_LABELS_PER_SECRET: usize = 20;

/// A stuck version newer than the reported failure belongs to a later rotation that may still
/// be running, healthy. Its re-check acts only once it is this old, even with no grace: a
/// rotation function runs at most 15 minutes per step, and a later failure reports itself.
pub const LATER_ROTATION_MIN_AGE: Duration = Duration::from_secs(15 * 60);

/// CloudTrail event times are whole seconds, and a `createSecret` step can fail within a second
/// of the pending version's creation: a version is "newer than the failure" only from this much
/// after the event time.
pub const FAILURE_CLOCK_SLACK: TimeDelta = TimeDelta::seconds(2);

/// Tag keys written on a secret. Keys allow letters, digits, spaces and `_ . : / = + - @`
/// (AWS-FACTS 3).
pub mod tag {
    /// Set before `AWSPENDING` is removed from a version that has no keep-label yet (only when
    /// the label quota forces that order), so that the version can be found again by id.
    pub const UNLABELLED_VERSION: &str = "rotation-rescue:unlabelled-version";
    pub const RESCUED_AT: &str = "rotation-rescue:rescued-at";
    pub const KEPT_VERSION: &str = "rotation-rescue:kept-version";
    pub const KEEP_LABEL: &str = "rotation-rescue:keep-label";
    pub const REASON: &str = "rotation-rescue:reason";
    /// Every key this function writes starts with this (the IAM policy scopes tagging to it).
    pub const PREFIX: &str = "rotation-rescue:";
}

/// A secret as `DescribeSecret` and `ListSecretVersionIds` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretState {
    pub arn: String,
    pub name: String,
    /// Absent until rotation was ever configured.
    pub rotation_enabled: Option<bool>,
    pub rotation_lambda_arn: Option<String>,
    /// `DeletedDate` is set: the secret is scheduled for deletion.
    pub deleted: bool,
    pub primary_region: Option<String>,
    pub owning_service: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Every version that still exists, labelled or not.
    pub versions: BTreeMap<String, Version>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub stages: BTreeSet<String>,
    pub created: Option<DateTime<Utc>>,
}

impl SecretState {
    /// The version with `AWSPENDING` but without `AWSCURRENT`: what a failed rotation leaves.
    fn stuck_versions(&self) -> Vec<&str> {
        self.versions
            .iter()
            .filter(|(_, v)| {
                v.stages.contains(stage::PENDING) && !v.stages.contains(stage::CURRENT)
            })
            .map(|(id, _)| id.as_str())
            .collect()
    }

    fn has_current(&self) -> bool {
        self.versions
            .values()
            .any(|v| v.stages.contains(stage::CURRENT))
    }

    fn label_count(&self) -> usize {
        self.versions.values().map(|v| v.stages.len()).sum()
    }

    /// The version that carries `label`, if any.
    fn holder_of(&self, label: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, v)| v.stages.contains(label))
            .map(|(id, _)| id.as_str())
    }
}

/// Why the secret was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A `RotationFailed` event, with its time and the step it names.
    RotationFailed {
        failed_at: DateTime<Utc>,
        step: FailedStep,
    },
    /// An operator named the secret; `force` bypasses the grace.
    Operator { force: bool },
    /// A re-check of a secret deferred earlier (through the re-check queue).
    Recheck {
        /// The stuck version seen when the secret was deferred.
        version_id: String,
        step: FailedStep,
        first_deferred_at: DateTime<Utc>,
        /// A stricter minimum age than the grace, carried over from an alarm.
        min_age: Duration,
    },
    /// A CloudWatch alarm on the rotation function: it names neither secret nor failure, so
    /// only versions older than max(grace, `RESCUE_ALARM_MIN_AGE`) are acted on.
    Alarm {
        alarm_name: String,
        /// The functions the alarm resolved to: the described secret must still be rotated by
        /// one of them (the listing that found it lags by minutes).
        functions: Vec<FunctionRef>,
    },
}

impl Cause {
    /// The failed step as far as it concerns `stuck_id`: a re-check's step holds only for the
    /// version it was seen on.
    pub fn step_for(&self, stuck_id: Option<&str>) -> FailedStep {
        match self {
            Cause::RotationFailed { step, .. } => *step,
            Cause::Recheck {
                version_id, step, ..
            } if Some(version_id.as_str()) == stuck_id => *step,
            Cause::Recheck { .. } | Cause::Operator { .. } | Cause::Alarm { .. } => {
                FailedStep::Unknown
            }
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Cause::Operator { .. })
    }
}

/// Where the function runs: secrets of other accounts and regions are not its business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// `None` when neither the invoked function ARN nor `RESCUE_ACCOUNT_ID` tells.
    pub account: Option<String>,
    pub region: String,
}

/// Why a secret was left alone. None of these is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    NotFound,
    ScheduledForDeletion,
    Replica {
        primary_region: String,
    },
    Managed {
        owning_service: String,
    },
    OutsideNamePrefix {
        prefix: String,
    },
    MissingScopeTag {
        tag: String,
    },
    OtherAccount {
        account: String,
    },
    OtherRegion {
        region: String,
    },
    NoRotationFunction,
    /// `RESCUE_ROTATION_FUNCTIONS` is set and does not list the secret's rotation function.
    OtherRotationFunction {
        function: String,
    },
    /// Listed as rotated by the alarmed function, but described with another one.
    NotAlarmedFunction {
        alarm: String,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotFound => write!(f, "secret not found"),
            SkipReason::ScheduledForDeletion => write!(f, "secret is scheduled for deletion"),
            SkipReason::Replica { primary_region } => write!(
                f,
                "replica secret: rotation runs in its primary region {primary_region}"
            ),
            SkipReason::Managed { owning_service } => write!(
                f,
                "managed by {owning_service} (set RESCUE_ALLOW_MANAGED=true to include)"
            ),
            SkipReason::OutsideNamePrefix { prefix } => {
                write!(f, "name outside the scope prefix {prefix:?}")
            }
            SkipReason::MissingScopeTag { tag } => write!(f, "lacks the scope tag {tag:?}"),
            SkipReason::OtherAccount { account } => {
                write!(f, "secret of another account ({account})")
            }
            SkipReason::OtherRegion { region } => write!(f, "secret of another region ({region})"),
            SkipReason::OtherRotationFunction { function } => write!(
                f,
                "rotated by {function:?}, which RESCUE_ROTATION_FUNCTIONS does not list"
            ),
            SkipReason::NotAlarmedFunction { alarm } => write!(
                f,
                "no longer rotated by a function that alarm {alarm:?} watches"
            ),
            SkipReason::NoRotationFunction => write!(
                f,
                "no rotation function: an AWSPENDING staged by hand is not a failed rotation"
            ),
        }
    }
}

/// One mutating call, in the order the plan runs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `CancelRotateSecret`: turns rotation off and ends the failed attempt.
    CancelRotation,
    /// `TagResource` with the version id, before `AWSPENDING` leaves a version that has no other
    /// label (only when the label quota forces that order).
    MarkUnlabelledVersion { version_id: String },
    /// `UpdateSecretVersionStage` with `MoveToVersionId` only: the label is on no other version.
    AttachLabel { label: String, version_id: String },
    /// `UpdateSecretVersionStage` with `RemoveFromVersionId` only.
    RemovePending { version_id: String },
    /// `UntagResource` of the marker, once the version carries its keep-label.
    UnmarkVersion,
    /// `TagResource` recording the rescue on the secret.
    TagSecret { tags: BTreeMap<String, String> },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::CancelRotation => "cancel_rotation",
            Action::MarkUnlabelledVersion { .. } => "mark_unlabelled_version",
            Action::AttachLabel { .. } => "attach_label",
            Action::RemovePending { .. } => "remove_pending",
            Action::UnmarkVersion => "unmark_version",
            Action::TagSecret { .. } => "tag_secret",
        }
    }
}

/// What the plan achieves once every action ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    Rescued,
    NeedsAttention,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub goal: Goal,
    pub reason: String,
    pub actions: Vec<Action>,
    pub stuck_version_id: Option<String>,
    /// The label that keeps the stuck version visible: ours, or one it already carried.
    pub keep_label: Option<String>,
    /// The kept version may hold the credential the target system now uses.
    pub may_hold_live_credential: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip(SkipReason),
    NothingToDo {
        reason: String,
    },
    /// Left unchanged until `recheck_at`; its re-check keeps applying `min_age`.
    Deferred {
        version_id: String,
        reason: String,
        recheck_at: DateTime<Utc>,
        min_age: Duration,
    },
    Act(Plan),
}

impl Decision {
    pub fn actions(&self) -> &[Action] {
        match self {
            Decision::Act(plan) => &plan.actions,
            _ => &[],
        }
    }
}

/// The secret's ARN checked against the function's own account and region, before anything else
/// is known. A name (not an ARN) passes: it resolves in the function's own account and region.
pub fn foreign_arn(secret_id: &str, home: &Home) -> Option<SkipReason> {
    let parts = ArnParts::parse(secret_id)?;
    if parts.region != home.region {
        return Some(SkipReason::OtherRegion {
            region: parts.region.to_owned(),
        });
    }
    match &home.account {
        Some(account) if parts.account != account => Some(SkipReason::OtherAccount {
            account: parts.account.to_owned(),
        }),
        _ => None,
    }
}

/// The name prefix checked on the identifier, before describing: a scoped deployment's policy
/// denies `DescribeSecret` outside the prefix, so asking would only fail. An identifier that
/// passes is checked again on the described name.
pub fn outside_name_prefix(secret_id: &str, config: &Config) -> Option<SkipReason> {
    let prefix = config.scope.name_prefix.as_ref()?;
    // A full ARN's resource is `secret:NAME-AbCdEf` (a random suffix): it never hides a match.
    let name = match ArnParts::parse(secret_id) {
        Some(arn) => arn.resource.strip_prefix("secret:").unwrap_or(arn.resource),
        None => secret_id,
    };
    (!name.starts_with(prefix.as_str())).then(|| SkipReason::OutsideNamePrefix {
        prefix: prefix.clone(),
    })
}

/// The region and account fields of an ARN (`arn:partition:service:region:account:resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArnParts<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> ArnParts<'a> {
    pub fn parse(arn: &'a str) -> Option<Self> {
        let mut fields = arn.splitn(6, ':');
        if fields.next()? != "arn" {
            return None;
        }
        let _partition = fields.next()?;
        let (service, region, account, resource) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        Some(ArnParts {
            service,
            region,
            account,
            resource,
        })
    }
}

/// The keep-label for a version: derived from the version alone, so every rescue of the same
/// version, even two at once, picks the same label.
pub fn keep_label(prefix: &str, version_id: &str, created: Option<DateTime<Utc>>) -> String {
    match created {
        Some(created) => format!("{prefix}_{}", created.format("%Y%m%dT%H%M%SZ")),
        None => format!("{prefix}_{version_id}"),
    }
}

/// Decides what to do with one described secret.
pub fn decide(
    secret: &SecretState,
    cause: &Cause,
    config: &Config,
    home: &Home,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(reason) = out_of_bounds(secret, cause, config, home) {
        return Decision::Skip(reason);
    }

    let repair = match repair_interrupted(secret, config) {
        Ok(repair) => repair,
        Err(reason) => {
            return Decision::Act(Plan {
                goal: Goal::NeedsAttention,
                reason,
                actions: Vec::new(),
                stuck_version_id: secret.tags.get(tag::UNLABELLED_VERSION).cloned(),
                keep_label: None,
                may_hold_live_credential: true,
            });
        }
    };
    let stuck = secret.stuck_versions();
    let stuck_id = match stuck.as_slice() {
        [] if repair.is_empty() => {
            return Decision::NothingToDo {
                reason: "no stuck version: AWSPENDING is on no version or on AWSCURRENT's".into(),
            };
        }
        [] => {
            let keep_label = repair_label(&repair);
            let reason = "finished an interrupted rescue".to_owned();
            let mut actions = repair;
            let marked = secret.tags.get(tag::UNLABELLED_VERSION);
            if let (Some(version_id), Some(label), true) = (marked, &keep_label, config.tag_secrets)
            {
                actions.push(Action::TagSecret {
                    tags: rescue_tags(version_id, Some(label), &reason, now),
                });
            }
            return Decision::Act(Plan {
                goal: Goal::Rescued,
                reason,
                keep_label,
                stuck_version_id: marked.cloned(),
                may_hold_live_credential: cause.step_for(None).may_have_changed_target(),
                actions,
            });
        }
        [one] => *one,
        _ => {
            // AWS keeps a label on one version at a time; anything else is not ours to guess.
            return Decision::Act(Plan {
                goal: Goal::NeedsAttention,
                reason: format!("AWSPENDING is on several versions: {}", stuck.join(", ")),
                actions: Vec::new(),
                stuck_version_id: None,
                keep_label: None,
                may_hold_live_credential: true,
            });
        }
    };
    let stuck_version = &secret.versions[stuck_id];

    if let Some(decision) = wait(stuck_id, stuck_version, cause, config, now) {
        return decision;
    }

    let step = cause.step_for(Some(stuck_id));
    let may_hold_live_credential = step.may_have_changed_target();
    let mut actions = repair;
    if secret.rotation_enabled == Some(true) {
        actions.push(Action::CancelRotation);
    }

    if !secret.has_current() {
        return Decision::Act(Plan {
            goal: Goal::NeedsAttention,
            reason: "no version holds AWSCURRENT: labels left as they are for a person to \
                     choose the current version"
                .into(),
            actions,
            stuck_version_id: Some(stuck_id.to_owned()),
            keep_label: None,
            may_hold_live_credential,
        });
    }

    let mut plan = Plan {
        goal: Goal::Rescued,
        reason: String::new(),
        actions,
        stuck_version_id: Some(stuck_id.to_owned()),
        keep_label: None,
        may_hold_live_credential,
    };

    // A label of someone else's already keeps the version visible (AWSPREVIOUS does not: it moves
    // away at the next rotation).
    let existing = stuck_version
        .stages
        .iter()
        .find(|label| !stage::is_aws_managed(label));
    if let Some(label) = existing {
        plan.keep_label = Some(label.clone());
        plan.actions.push(Action::RemovePending {
            version_id: stuck_id.to_owned(),
        });
    } else {
        let Some(label) = free_keep_label(secret, config, stuck_id, stuck_version) else {
            plan.goal = Goal::NeedsAttention;
            plan.reason = "both candidate keep-labels sit on other versions: AWSPENDING left \
                           in place"
                .into();
            return Decision::Act(plan);
        };
        let attach = Action::AttachLabel {
            label: label.clone(),
            version_id: stuck_id.to_owned(),
        };
        let remove = Action::RemovePending {
            version_id: stuck_id.to_owned(),
        };
        // Labels the repair above attaches count against the quota too.
        let repaired = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::AttachLabel { .. }))
            .count();
        if secret.label_count() + repaired < MAX_LABELS_PER_SECRET {
            plan.actions.extend([attach, remove]);
        } else {
            // No slot for the keep-label until AWSPENDING frees one: leave a trace first.
            plan.actions.extend([
                Action::MarkUnlabelledVersion {
                    version_id: stuck_id.to_owned(),
                },
                remove,
                attach,
                Action::UnmarkVersion,
            ]);
        }
        plan.keep_label = Some(label);
    }
    // A marker left on this version by an interrupted rescue is dropped once it is kept.
    let marked = secret.tags.get(tag::UNLABELLED_VERSION);
    if marked.is_some_and(|id| id == stuck_id) && !plan.actions.contains(&Action::UnmarkVersion) {
        plan.actions.push(Action::UnmarkVersion);
    }

    plan.reason = rescue_reason(step);
    if config.tag_secrets {
        plan.actions.push(Action::TagSecret {
            tags: rescue_tags(stuck_id, plan.keep_label.as_deref(), &plan.reason, now),
        });
    }
    Decision::Act(plan)
}

/// Whether the stuck version must wait: it belongs to a later rotation, or Secrets Manager's own
/// retry still has time (`RESCUE_GRACE`). `None`: act now.
fn wait(
    stuck_id: &str,
    stuck: &Version,
    cause: &Cause,
    config: &Config,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let wait = match cause {
        Cause::Alarm { .. } => config.grace.max(config.alarm_min_age),
        Cause::Recheck { min_age, .. } => config.grace.max(*min_age),
        _ => config.grace,
    };
    let grace = TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX);
    let deferred =
        |recheck_at: DateTime<Utc>, reason: String, min_age: Duration| Decision::Deferred {
            version_id: stuck_id.to_owned(),
            reason,
            recheck_at,
            min_age,
        };
    let young = |since: DateTime<Utc>| {
        // No grace means no waiting, whatever the clocks say about the version's age.
        if grace.is_zero() {
            return None;
        }
        let ready_at = since
            .checked_add_signed(grace)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (now < ready_at).then(|| {
            let reason = format!(
                "stuck version is {} s old: it waits {} s (RESCUE_GRACE, or RESCUE_ALARM_MIN_AGE \
                 for alarms) until {}",
                (now - since).num_seconds().max(0),
                grace.num_seconds(),
                ready_at.to_rfc3339()
            );
            (ready_at, reason)
        })
    };

    match cause {
        Cause::RotationFailed { failed_at, .. } => {
            // A version created after the failure belongs to a later rotation, which reports
            // its own failure if it fails; it is re-checked once its own grace has passed. A
            // missing date never defers on this rule.
            if let Some(created) = stuck
                .created
                .filter(|c| *c >= *failed_at + FAILURE_CLOCK_SLACK)
            {
                // That rotation may still be running, healthy: it gets at least
                // LATER_ROTATION_MIN_AGE before its re-check may act, even without a grace.
                let min_age = wait.max(LATER_ROTATION_MIN_AGE);
                let recheck_at = TimeDelta::from_std(min_age)
                    .ok()
                    .and_then(|age| created.checked_add_signed(age))
                    .unwrap_or(created);
                let reason = format!(
                    "stuck version created {} after the failure at {}: a later rotation",
                    created.to_rfc3339(),
                    failed_at.to_rfc3339()
                );
                return Some(deferred(recheck_at, reason, min_age));
            }
            // Without a creation date, the failure is the latest the version can date from.
            let (ready_at, reason) = young(stuck.created.unwrap_or(*failed_at))?;
            Some(deferred(ready_at, reason, wait))
        }
        Cause::Operator { force: true } => None,
        // A version of unknown age is given the full minimum age from now (and re-checked).
        Cause::Alarm { .. } => {
            let (ready_at, reason) = young(stuck.created.unwrap_or(now))?;
            Some(deferred(ready_at, reason, wait))
        }
        // An operator's call waits only for a version known to be young.
        Cause::Operator { force: false } => {
            let (ready_at, reason) = young(stuck.created?)?;
            let reason = format!("{reason}; set \"force\": true to rescue now");
            Some(deferred(ready_at, reason, wait))
        }
        Cause::Recheck {
            first_deferred_at, ..
        } => {
            let (ready_at, reason) = young(stuck.created.unwrap_or(*first_deferred_at))?;
            if now - *first_deferred_at >= MAX_DEFERRAL {
                return Some(Decision::Act(Plan {
                    goal: Goal::NeedsAttention,
                    reason: format!(
                        "still stuck on a version younger than the grace {} h after it was \
                         first deferred ({}): no more re-checks",
                        MAX_DEFERRAL.num_hours(),
                        first_deferred_at.to_rfc3339()
                    ),
                    actions: Vec::new(),
                    stuck_version_id: Some(stuck_id.to_owned()),
                    keep_label: None,
                    may_hold_live_credential: true,
                }));
            }
            Some(deferred(ready_at, reason, wait))
        }
    }
}

/// The skip rules, in the order they apply.
fn out_of_bounds(
    secret: &SecretState,
    cause: &Cause,
    config: &Config,
    home: &Home,
) -> Option<SkipReason> {
    if secret.deleted {
        return Some(SkipReason::ScheduledForDeletion);
    }
    if let Some(primary) = secret
        .primary_region
        .as_ref()
        .filter(|r| **r != home.region)
    {
        return Some(SkipReason::Replica {
            primary_region: primary.clone(),
        });
    }
    if let Some(service) = secret
        .owning_service
        .as_ref()
        .filter(|_| !config.allow_managed)
    {
        return Some(SkipReason::Managed {
            owning_service: service.clone(),
        });
    }
    if let Some(prefix) = &config.scope.name_prefix
        && !secret.name.starts_with(prefix.as_str())
    {
        return Some(SkipReason::OutsideNamePrefix {
            prefix: prefix.clone(),
        });
    }
    if let Some(scope_tag) = &config.scope.tag {
        let matches = match (secret.tags.get(&scope_tag.key), &scope_tag.value) {
            (Some(actual), Some(wanted)) => actual == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !matches {
            let tag = match &scope_tag.value {
                Some(value) => format!("{}={value}", scope_tag.key),
                None => scope_tag.key.clone(),
            };
            return Some(SkipReason::MissingScopeTag { tag });
        }
    }
    if let Some(reason) = foreign_arn(&secret.arn, home) {
        return Some(reason);
    }
    if secret.rotation_lambda_arn.is_none() && !cause.is_operator() {
        return Some(SkipReason::NoRotationFunction);
    }
    if let Cause::Alarm {
        alarm_name,
        functions,
    } = cause
    {
        let rotator = secret.rotation_lambda_arn.as_deref().unwrap_or_default();
        if !functions.iter().any(|f| f.matches(rotator)) {
            return Some(SkipReason::NotAlarmedFunction {
                alarm: alarm_name.clone(),
            });
        }
    }
    if !config.rotation_functions.is_empty() {
        let rotator = secret.rotation_lambda_arn.as_deref().unwrap_or_default();
        if !config.rotation_functions.iter().any(|f| f.matches(rotator)) {
            return Some(SkipReason::OtherRotationFunction {
                function: rotator.to_owned(),
            });
        }
    }
    None
}

/// A rescue that was interrupted between removing `AWSPENDING` and attaching the keep-label left
/// its marker tag: re-attach the keep-label by version id, then drop the marker.
fn repair_interrupted(secret: &SecretState, config: &Config) -> Result<Vec<Action>, String> {
    let Some(marked) = secret.tags.get(tag::UNLABELLED_VERSION) else {
        return Ok(Vec::new());
    };
    let Some(version) = secret.versions.get(marked) else {
        // Purged or never existed: nothing left to keep; the marker only misleads.
        return Ok(vec![Action::UnmarkVersion]);
    };
    if version.stages.contains(stage::PENDING) {
        // Still stuck: the ordinary rescue below handles it and removes the marker.
        return Ok(Vec::new());
    }
    if !version.stages.is_empty() {
        return Ok(vec![Action::UnmarkVersion]);
    }
    // The marker stays in every refusal below: it is the only trace of the version.
    if secret.label_count() >= MAX_LABELS_PER_SECRET {
        return Err(format!(
            "version {marked} has no label and the 20-label quota is full: free a label, or \
             re-label it by id (the tag {} names it)",
            tag::UNLABELLED_VERSION
        ));
    }
    match free_keep_label(secret, config, marked, version) {
        Some(label) => Ok(vec![
            Action::AttachLabel {
                label,
                version_id: marked.clone(),
            },
            Action::UnmarkVersion,
        ]),
        None => Err(format!(
            "version {marked} has no label and both candidate keep-labels sit on other versions"
        )),
    }
}

fn repair_label(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|action| match action {
        Action::AttachLabel { label, .. } => Some(label.clone()),
        _ => None,
    })
}

/// The keep-label for `version_id`, or the same with the version id appended when another version
/// already carries it. Never a label that sits on another version: it would have to be moved.
fn free_keep_label(
    secret: &SecretState,
    config: &Config,
    version_id: &str,
    version: &Version,
) -> Option<String> {
    let base = keep_label(&config.keep_label_prefix, version_id, version.created);
    let suffixed = format!("{base}_{version_id}");
    [base, suffixed].into_iter().find(|label| {
        secret
            .holder_of(label)
            .is_none_or(|holder| holder == version_id)
    })
}

fn rescue_reason(step: FailedStep) -> String {
    match step {
        FailedStep::Unknown => "rotation failed at an unknown step".to_owned(),
        step => format!("rotation failed in {}", step.as_str()),
    }
}

fn rescue_tags(
    version_id: &str,
    keep_label: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([
        (
            tag::RESCUED_AT.to_owned(),
            now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        (tag::KEPT_VERSION.to_owned(), tag_value(version_id)),
        (tag::REASON.to_owned(), tag_value(reason)),
    ]);
    if let Some(label) = keep_label {
        tags.insert(tag::KEEP_LABEL.to_owned(), tag_value(label));
    }
    tags
}

/// A tag value within the character rules: letters, digits, spaces and `_ . : / = + - @`, at
/// most 256 characters (AWS-FACTS 3). Anything else becomes a space.
pub fn tag_value(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric()
                || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
            {
                c
            } else {
                ' '
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
