//! The decision rules, one case each, then the invariants of rescue plans as properties.

use super::*;
use crate::config::{Scope, ScopeTag};
use chrono::TimeZone;
use proptest::prelude::*;
use std::time::Duration;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap()
}

fn config() -> Config {
    Config {
        dry_run: false,
        keep_label_prefix: "RESCUED".into(),
        tag_secrets: true,
        scope: Scope::default(),
        allow_managed: false,
        account_id: Some("123456789012".into()),
        region: "us-east-1".into(),
        // The rules of issue #2 act at once; the grace has its own tests below.
        grace: Duration::ZERO,
        recheck_queue_url: None,
        recheck_min_delay: Duration::from_secs(60),
        alarm_min_age: Duration::ZERO,
        alarm_functions: BTreeMap::new(),
        max_rate: std::num::NonZeroU32::new(20).unwrap(),
        rotation_functions: Vec::new(),
    }
}

fn home() -> Home {
    Home {
        account: Some("123456789012".into()),
        region: "us-east-1".into(),
    }
}

fn version(stages: &[&str], created: Option<DateTime<Utc>>) -> Version {
    Version {
        stages: stages.iter().map(|s| s.to_string()).collect(),
        created,
    }
}

/// A secret whose rotation failed: AWSCURRENT on v1, AWSPENDING on v2 created at 16:50:02.
fn stuck_secret() -> SecretState {
    SecretState {
        arn: ARN.into(),
        name: "prod/db".into(),
        rotation_enabled: Some(true),
        rotation_lambda_arn: Some("arn:aws:lambda:us-east-1:123456789012:function:rot".into()),
        versions: BTreeMap::from([
            ("v0".into(), version(&["AWSPREVIOUS"], Some(at(10, 0, 0)))),
            ("v1".into(), version(&["AWSCURRENT"], Some(at(16, 0, 0)))),
            ("v2".into(), version(&["AWSPENDING"], Some(at(16, 50, 2)))),
        ]),
        ..SecretState::default()
    }
}

fn failed(step: FailedStep, failed_at: DateTime<Utc>) -> Cause {
    Cause::RotationFailed { failed_at, step }
}

fn event_cause() -> Cause {
    failed(FailedStep::SetSecret, at(16, 50, 3))
}

fn now() -> DateTime<Utc> {
    at(17, 0, 0)
}

fn run(secret: &SecretState, cause: Cause) -> Decision {
    decide(secret, &cause, &config(), &home(), now())
}

fn plan(decision: Decision) -> Plan {
    match decision {
        Decision::Act(plan) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

fn attach(label: &str, version_id: &str) -> Action {
    Action::AttachLabel {
        label: label.into(),
        version_id: version_id.into(),
    }
}

fn remove(version_id: &str) -> Action {
    Action::RemovePending {
        version_id: version_id.into(),
    }
}

/// The actions without the final tagging, whose values depend on the clock.
fn label_actions(plan: &Plan) -> Vec<Action> {
    plan.actions
        .iter()
        .filter(|a| !matches!(a, Action::TagSecret { .. }))
        .cloned()
        .collect()
}

#[test]
fn skip_rules_apply_in_order_and_name_their_reason() {
    let base = stuck_secret();
    let cases: Vec<(&str, SecretState, Config, SkipReason)> = vec![
        (
            "scheduled for deletion",
            SecretState {
                deleted: true,
                // also a replica: deletion is checked first
                primary_region: Some("eu-west-1".into()),
                ..base.clone()
            },
            config(),
            SkipReason::ScheduledForDeletion,
        ),
        (
            "replica",
            SecretState {
                primary_region: Some("eu-west-1".into()),
                ..base.clone()
            },
            config(),
            SkipReason::Replica {
                primary_region: "eu-west-1".into(),
            },
        ),
        (
            "managed",
            SecretState {
                owning_service: Some("rds".into()),
                ..base.clone()
            },
            config(),
            SkipReason::Managed {
                owning_service: "rds".into(),
            },
        ),
        (
            "outside name prefix",
            base.clone(),
            Config {
                scope: Scope {
                    name_prefix: Some("team-a/".into()),
                    tag: None,
                },
                ..config()
            },
            SkipReason::OutsideNamePrefix {
                prefix: "team-a/".into(),
            },
        ),
        (
            "missing scope tag",
            base.clone(),
            Config {
                scope: Scope {
                    name_prefix: None,
                    tag: Some(ScopeTag {
                        key: "rescue".into(),
                        value: Some("yes".into()),
                    }),
                },
                ..config()
            },
            SkipReason::MissingScopeTag {
                tag: "rescue=yes".into(),
            },
        ),
        (
            "other account",
            SecretState {
                arn: ARN.replace("123456789012", "999999999999"),
                ..base.clone()
            },
            config(),
            SkipReason::OtherAccount {
                account: "999999999999".into(),
            },
        ),
        (
            "other region",
            SecretState {
                arn: ARN.replace("us-east-1", "eu-west-1"),
                ..base.clone()
            },
            config(),
            SkipReason::OtherRegion {
                region: "eu-west-1".into(),
            },
        ),
        (
            "no rotation function",
            SecretState {
                rotation_lambda_arn: None,
                ..base.clone()
            },
            config(),
            SkipReason::NoRotationFunction,
        ),
    ];
    for (name, secret, config, expected) in cases {
        let decision = decide(&secret, &event_cause(), &config, &home(), now());
        assert_eq!(decision, Decision::Skip(expected), "{name}");
    }
}

#[test]
fn managed_secret_is_rescued_when_allowed() {
    let secret = SecretState {
        owning_service: Some("rds".into()),
        ..stuck_secret()
    };
    let config = Config {
        allow_managed: true,
        ..config()
    };
    let decision = decide(&secret, &event_cause(), &config, &home(), now());
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn scope_matches_on_the_described_secret() {
    let mut secret = stuck_secret();
    secret.tags.insert("rescue".into(), "yes".into());
    let config = Config {
        scope: Scope {
            name_prefix: Some("prod/".into()),
            tag: Some(ScopeTag {
                key: "rescue".into(),
                value: None,
            }),
        },
        ..config()
    };
    let decision = decide(&secret, &event_cause(), &config, &home(), now());
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn unknown_account_checks_only_the_region() {
    let secret = SecretState {
        arn: ARN.replace("123456789012", "999999999999"),
        ..stuck_secret()
    };
    let home = Home {
        account: None,
        region: "us-east-1".into(),
    };
    let decision = decide(&secret, &event_cause(), &config(), &home, now());
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn operator_may_rescue_pending_staged_without_rotation_function() {
    let secret = SecretState {
        rotation_lambda_arn: None,
        rotation_enabled: None,
        ..stuck_secret()
    };
    let plan = plan(run(&secret, Cause::Operator { force: false }));
    // Rotation was never configured: nothing to cancel.
    assert_eq!(
        label_actions(&plan),
        vec![attach("RESCUED_20261203T165002Z", "v2"), remove("v2")]
    );
}

#[test]
fn no_stuck_version_is_nothing_to_do_and_never_cancels() {
    let resting_states = [
        // AWSPENDING on no version
        BTreeMap::from([("v1".to_string(), version(&["AWSCURRENT"], None))]),
        // AWSPENDING on AWSCURRENT's version
        BTreeMap::from([(
            "v1".to_string(),
            version(&["AWSCURRENT", "AWSPENDING"], None),
        )]),
    ];
    for versions in resting_states {
        let secret = SecretState {
            versions,
            ..stuck_secret()
        };
        for cause in [event_cause(), Cause::Operator { force: false }] {
            let decision = run(&secret, cause);
            assert!(
                matches!(decision, Decision::NothingToDo { .. }),
                "{decision:?}"
            );
        }
    }
}

#[test]
fn version_newer_than_the_failure_is_deferred() {
    // Created 16:50:02; the failure at 16:50:00 is two seconds before: a later rotation.
    let decision = run(
        &stuck_secret(),
        failed(FailedStep::SetSecret, at(16, 50, 0)),
    );
    assert!(
        matches!(&decision, Decision::Deferred { version_id, .. } if version_id == "v2"),
        "{decision:?}"
    );
}

#[test]
fn version_within_the_clock_slack_of_the_failure_is_rescued() {
    // CloudTrail times are whole seconds: created 1.9 s after the reported time is the same
    // rotation.
    let mut secret = stuck_secret();
    secret.versions.get_mut("v2").unwrap().created =
        Some(at(16, 50, 0) + TimeDelta::milliseconds(1900));
    let decision = run(&secret, failed(FailedStep::CreateSecret, at(16, 50, 0)));
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn missing_created_date_never_defers_and_names_the_label_by_version() {
    let mut secret = stuck_secret();
    secret.versions.get_mut("v2").unwrap().created = None;
    let plan = plan(run(&secret, failed(FailedStep::SetSecret, at(1, 0, 0))));
    assert_eq!(plan.keep_label.as_deref(), Some("RESCUED_v2"));
}

#[test]
fn operator_call_is_never_deferred_for_age() {
    let decision = run(&stuck_secret(), Cause::Operator { force: false });
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn no_current_version_cancels_and_leaves_labels_for_a_person() {
    let secret = SecretState {
        versions: BTreeMap::from([("v2".into(), version(&["AWSPENDING"], Some(at(16, 50, 2))))]),
        ..stuck_secret()
    };
    let plan = plan(run(&secret, event_cause()));
    assert_eq!(plan.goal, Goal::NeedsAttention);
    assert_eq!(plan.actions, vec![Action::CancelRotation]);

    let already_off = SecretState {
        rotation_enabled: Some(false),
        ..secret
    };
    assert!(plan_actions(run(&already_off, event_cause())).is_empty());
}

fn plan_actions(decision: Decision) -> Vec<Action> {
    decision.actions().to_vec()
}

#[test]
fn rescue_cancels_keeps_then_removes_pending_then_tags() {
    let plan = plan(run(&stuck_secret(), event_cause()));
    assert_eq!(plan.goal, Goal::Rescued);
    assert_eq!(plan.stuck_version_id.as_deref(), Some("v2"));
    assert_eq!(plan.keep_label.as_deref(), Some("RESCUED_20261203T165002Z"));
    assert!(plan.may_hold_live_credential);
    assert_eq!(
        label_actions(&plan),
        vec![
            Action::CancelRotation,
            attach("RESCUED_20261203T165002Z", "v2"),
            remove("v2"),
        ]
    );
    let Some(Action::TagSecret { tags }) = plan.actions.last() else {
        panic!("the plan does not end by tagging: {:?}", plan.actions);
    };
    assert_eq!(tags[tag::RESCUED_AT], "2026-12-03T17:00:00Z");
    assert_eq!(tags[tag::KEPT_VERSION], "v2");
    assert_eq!(tags[tag::KEEP_LABEL], "RESCUED_20261203T165002Z");
    assert_eq!(tags[tag::REASON], "rotation failed in setSecret");
}

#[test]
fn rotation_already_off_is_not_cancelled_again() {
    for enabled in [Some(false), None] {
        let secret = SecretState {
            rotation_enabled: enabled,
            ..stuck_secret()
        };
        let plan = plan(run(&secret, event_cause()));
        assert!(
            !plan.actions.contains(&Action::CancelRotation),
            "{enabled:?}"
        );
    }
}

#[test]
fn create_secret_failure_is_reported_as_probably_not_live() {
    let plan = plan(run(
        &stuck_secret(),
        failed(FailedStep::CreateSecret, at(16, 50, 3)),
    ));
    assert!(!plan.may_hold_live_credential);
    // ...but the version is kept all the same: an earlier attempt may have got further.
    assert_eq!(plan.keep_label.as_deref(), Some("RESCUED_20261203T165002Z"));
}

#[test]
fn unknown_step_may_hold_the_live_credential() {
    let plan = plan(run(
        &stuck_secret(),
        failed(FailedStep::Unknown, at(16, 50, 3)),
    ));
    assert!(plan.may_hold_live_credential);
    assert_eq!(plan.reason, "rotation failed at an unknown step");
}

#[test]
fn own_label_on_the_stuck_version_is_kept_and_none_added() {
    let mut secret = stuck_secret();
    secret
        .versions
        .get_mut("v2")
        .unwrap()
        .stages
        .insert("BREAKGLASS".into());
    let plan = plan(run(&secret, event_cause()));
    assert_eq!(plan.keep_label.as_deref(), Some("BREAKGLASS"));
    assert_eq!(
        label_actions(&plan),
        vec![Action::CancelRotation, remove("v2")]
    );
}

#[test]
fn awsprevious_on_the_stuck_version_does_not_count_as_keeping_it() {
    let mut secret = stuck_secret();
    secret.versions.remove("v0");
    secret
        .versions
        .get_mut("v2")
        .unwrap()
        .stages
        .insert("AWSPREVIOUS".into());
    let plan = plan(run(&secret, event_cause()));
    assert!(
        plan.actions
            .contains(&attach("RESCUED_20261203T165002Z", "v2"))
    );
}

#[test]
fn keep_label_taken_by_another_version_gets_the_version_id() {
    let mut secret = stuck_secret();
    secret
        .versions
        .get_mut("v0")
        .unwrap()
        .stages
        .insert("RESCUED_20261203T165002Z".into());
    let plan = plan(run(&secret, event_cause()));
    assert_eq!(
        plan.keep_label.as_deref(),
        Some("RESCUED_20261203T165002Z_v2")
    );
    // The other version's label is never moved or removed.
    assert!(plan.actions.iter().all(|a| match a {
        Action::AttachLabel { label, .. } => label != "RESCUED_20261203T165002Z",
        Action::RemovePending { version_id } => version_id == "v2",
        _ => true,
    }));
}

#[test]
fn both_keep_labels_taken_leaves_pending_in_place() {
    let mut secret = stuck_secret();
    let other = &mut secret.versions.get_mut("v0").unwrap().stages;
    other.insert("RESCUED_20261203T165002Z".into());
    other.insert("RESCUED_20261203T165002Z_v2".into());
    let plan = plan(run(&secret, event_cause()));
    assert_eq!(plan.goal, Goal::NeedsAttention);
    assert_eq!(plan.actions, vec![Action::CancelRotation]);
}

/// A secret with `filler` extra custom labels on old versions.
fn crowded(filler: usize) -> SecretState {
    let mut secret = stuck_secret();
    for i in 0..filler {
        secret.versions.insert(
            format!("old{i:02}"),
            version(&[&format!("KEEP{i:02}")], Some(at(1, 0, 0))),
        );
    }
    secret
}

#[test]
fn label_quota_reached_marks_the_version_before_freeing_a_slot() {
    // 3 labels + 17 = 20: no room for a 21st.
    let plan = plan(run(&crowded(17), event_cause()));
    assert_eq!(
        label_actions(&plan),
        vec![
            Action::CancelRotation,
            Action::MarkUnlabelledVersion {
                version_id: "v2".into()
            },
            remove("v2"),
            attach("RESCUED_20261203T165002Z", "v2"),
            Action::UnmarkVersion,
        ]
    );
    // One below the quota: the ordinary order.
    let plan = self::plan(run(&crowded(16), event_cause()));
    assert_eq!(
        label_actions(&plan)[1],
        attach("RESCUED_20261203T165002Z", "v2")
    );
}

#[test]
fn interrupted_quota_rescue_reattaches_the_marked_version_by_id() {
    // Marked, AWSPENDING removed, then interrupted: v2 exists with no label.
    let mut secret = crowded(17);
    secret.rotation_enabled = Some(false);
    secret.versions.get_mut("v2").unwrap().stages.clear();
    secret
        .tags
        .insert(tag::UNLABELLED_VERSION.into(), "v2".into());
    let plan = plan(run(&secret, event_cause()));
    assert_eq!(plan.goal, Goal::Rescued);
    assert_eq!(plan.stuck_version_id.as_deref(), Some("v2"));
    assert_eq!(
        label_actions(&plan),
        vec![
            attach("RESCUED_20261203T165002Z", "v2"),
            Action::UnmarkVersion
        ]
    );
    // ...and the rescue is recorded on the secret as for any other.
    let Some(Action::TagSecret { tags }) = plan.actions.last() else {
        panic!("no rescue tags: {:?}", plan.actions);
    };
    assert_eq!(tags[tag::KEPT_VERSION], "v2");
}

#[test]
fn marker_of_a_labelled_or_vanished_version_is_dropped() {
    for versions_v2 in [Some(version(&["RESCUED_X"], None)), None] {
        let mut secret = stuck_secret();
        secret.versions.remove("v2");
        if let Some(v2) = versions_v2.clone() {
            secret.versions.insert("v2".into(), v2);
        }
        secret
            .tags
            .insert(tag::UNLABELLED_VERSION.into(), "v2".into());
        let plan = plan(run(&secret, event_cause()));
        assert_eq!(plan.actions, vec![Action::UnmarkVersion], "{versions_v2:?}");
    }
}

#[test]
fn no_tagging_when_disabled() {
    let config = Config {
        tag_secrets: false,
        ..config()
    };
    let decision = decide(&stuck_secret(), &event_cause(), &config, &home(), now());
    assert!(
        plan(decision)
            .actions
            .iter()
            .all(|a| !matches!(a, Action::TagSecret { .. }))
    );
}

#[test]
fn tag_values_keep_only_allowed_characters() {
    assert_eq!(
        tag_value("failed; {json} in setSecret, at 10:00+01"),
        "failed   json  in setSecret  at 10:00+01"
    );
    assert_eq!(tag_value(&"x".repeat(300)).len(), 256);
}

#[test]
fn foreign_arn_is_checked_before_describing_but_names_pass() {
    assert_eq!(foreign_arn("prod/db", &home()), None);
    assert_eq!(foreign_arn(ARN, &home()), None);
    assert_eq!(
        foreign_arn(&ARN.replace("us-east-1", "eu-west-1"), &home()),
        Some(SkipReason::OtherRegion {
            region: "eu-west-1".into()
        })
    );
}

// ---- properties -------------------------------------------------------------------------

const LABELS: [&str; 6] = [
    "AWSCURRENT",
    "AWSPENDING",
    "AWSPREVIOUS",
    "TEAM",
    "RESCUED_20261203T165002Z",
    "RESCUED_v2",
];

/// Any secret: up to 5 versions, each label on at most one version (as AWS guarantees), some
/// filler labels, optional dates, flags and a marker tag.
fn any_secret() -> impl Strategy<Value = SecretState> {
    (
        prop::collection::vec(prop::option::of(0usize..5), LABELS.len()),
        prop::collection::vec(prop::option::of(0i64..7200), 5),
        0usize..20,
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::option::of(0usize..6),
        prop::sample::select(vec!["prod/db", "dev/db"]),
    )
        .prop_map(
            |(holders, created, filler, enabled, has_fn, marker, name)| {
                let mut versions: BTreeMap<String, Version> = BTreeMap::new();
                for (i, offset) in created.iter().enumerate() {
                    versions.insert(
                        format!("v{i}"),
                        Version {
                            stages: BTreeSet::new(),
                            created: offset.map(|s| at(16, 0, 0) + TimeDelta::seconds(s)),
                        },
                    );
                }
                for (label, holder) in LABELS.iter().zip(holders) {
                    if let Some(i) = holder {
                        let version = versions.get_mut(&format!("v{i}")).unwrap();
                        version.stages.insert(label.to_string());
                    }
                }
                // AWS never holds more than 20 labels.
                let labelled: usize = versions.values().map(|v| v.stages.len()).sum();
                for i in 0..filler.min(MAX_LABELS_PER_SECRET - labelled) {
                    let stages = BTreeSet::from([format!("F{i}")]);
                    versions.insert(
                        format!("f{i}"),
                        Version {
                            stages,
                            created: None,
                        },
                    );
                }
                let mut tags = BTreeMap::new();
                if let Some(i) = marker {
                    tags.insert(tag::UNLABELLED_VERSION.to_string(), format!("v{i}"));
                }
                SecretState {
                    arn: ARN.replace("prod/db", name),
                    name: name.into(),
                    rotation_enabled: enabled,
                    rotation_lambda_arn: has_fn.then(|| "arn:aws:lambda:x".into()),
                    tags,
                    versions,
                    ..SecretState::default()
                }
            },
        )
}

fn any_cause() -> impl Strategy<Value = Cause> {
    prop_oneof![
        Just(Cause::Operator { force: false }),
        Just(Cause::Operator { force: true }),
        (0i64..7200)
            .prop_map(|s| failed(FailedStep::TestSecret, at(16, 0, 0) + TimeDelta::seconds(s))),
        (0usize..5, 0i64..100_000).prop_map(|(v, s)| recheck(
            &format!("v{v}"),
            FailedStep::SetSecret,
            now() - TimeDelta::seconds(s)
        )),
    ]
}

/// What AWS would do with each action; panics where AWS would refuse.
fn apply(secret: &mut SecretState, action: &Action) {
    match action {
        Action::CancelRotation => {
            assert!(secret.rotation_lambda_arn.is_some() || secret.rotation_enabled.is_some());
            secret.rotation_enabled = Some(false);
        }
        Action::MarkUnlabelledVersion { version_id } => {
            secret
                .tags
                .insert(tag::UNLABELLED_VERSION.into(), version_id.clone());
        }
        Action::AttachLabel { label, version_id } => {
            let holder = secret.holder_of(label).map(str::to_owned);
            assert!(
                holder.is_none() || holder.as_deref() == Some(version_id.as_str()),
                "{label} sits on {holder:?}: moving it would need RemoveFromVersionId"
            );
            assert!(secret.label_count() < MAX_LABELS_PER_SECRET || holder.is_some());
            let version = secret.versions.get_mut(version_id).expect("version exists");
            version.stages.insert(label.clone());
        }
        Action::RemovePending { version_id } => {
            let version = secret.versions.get_mut(version_id).expect("version exists");
            assert!(
                version.stages.remove(stage::PENDING),
                "AWSPENDING not on it"
            );
        }
        Action::UnmarkVersion => {
            secret.tags.remove(tag::UNLABELLED_VERSION);
        }
        Action::TagSecret { tags } => secret.tags.extend(tags.clone()),
    }
}

fn holders(secret: &SecretState, label: &str) -> Option<String> {
    secret.holder_of(label).map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn rescue_plans_keep_their_invariants(
        secret in any_secret(),
        cause in any_cause(),
        scoped in any::<bool>(),
    ) {
        let config = Config {
            scope: Scope {
                name_prefix: scoped.then(|| "prod/".into()),
                tag: None,
            },
            ..config()
        };
        let decision = decide(&secret, &cause, &config, &home(), now());

        // Nothing outside scope is touched.
        if scoped && !secret.name.starts_with("prod/") {
            prop_assert!(matches!(decision, Decision::Skip(_)));
        }
        // Never cancel a rotation that is not stuck.
        if secret.stuck_versions().is_empty() {
            prop_assert!(!decision.actions().contains(&Action::CancelRotation));
        }
        let Decision::Act(plan) = decision else { return Ok(()) };

        let mut after = secret.clone();
        for action in &plan.actions {
            apply(&mut after, action);
            // The quota is respected at every step.
            prop_assert!(after.label_count() <= secret.label_count().max(MAX_LABELS_PER_SECRET));
        }

        // AWSCURRENT and AWSPREVIOUS never move.
        prop_assert_eq!(holders(&after, "AWSCURRENT"), holders(&secret, "AWSCURRENT"));
        prop_assert_eq!(holders(&after, "AWSPREVIOUS"), holders(&secret, "AWSPREVIOUS"));
        // AWSPENDING never leaves the current version.
        let current = holders(&secret, "AWSCURRENT");
        if current.is_some() && holders(&secret, "AWSPENDING") == current {
            prop_assert_eq!(holders(&after, "AWSPENDING"), current);
        }
        // No version that had a label ends without one unless the plan reports it.
        for (id, before) in &secret.versions {
            let ends_unlabelled = after.versions[id].stages.is_empty();
            if !before.stages.is_empty() && ends_unlabelled {
                prop_assert_eq!(plan.goal.clone(), Goal::NeedsAttention);
                prop_assert_eq!(plan.stuck_version_id.as_deref(), Some(id.as_str()));
            }
        }
        // A plan applied and then re-planned is empty.
        let again = decide(&after, &cause, &config, &home(), now());
        prop_assert!(again.actions().is_empty(), "re-plan: {:?}", again);
    }
}

// ---- the grace (RESCUE_GRACE) and re-checks ---------------------------------------------

fn with_grace(minutes: u64) -> Config {
    Config {
        grace: Duration::from_secs(minutes * 60),
        recheck_queue_url: Some("https://sqs.example/recheck".into()),
        ..config()
    }
}

fn decide_at(secret: &SecretState, cause: &Cause, config: &Config, now: DateTime<Utc>) -> Decision {
    decide(secret, cause, config, &home(), now)
}

fn recheck(version_id: &str, step: FailedStep, first_deferred_at: DateTime<Utc>) -> Cause {
    Cause::Recheck {
        version_id: version_id.into(),
        step,
        first_deferred_at,
        min_age: Duration::ZERO,
    }
}

fn deferred_until(decision: &Decision) -> DateTime<Utc> {
    match decision {
        Decision::Deferred { recheck_at, .. } => *recheck_at,
        other => panic!("expected deferred, got {other:?}"),
    }
}

#[test]
fn stuck_version_younger_than_the_grace_is_deferred_until_it_has_passed() {
    // Created 16:50:02 with a 15-minute grace: deferred at 17:00, until 17:05:02.
    let decision = decide_at(&stuck_secret(), &event_cause(), &with_grace(15), now());
    assert_eq!(deferred_until(&decision), at(17, 5, 2));
    // One second before the grace ends, still deferred; at its end, rescued.
    let before = decide_at(
        &stuck_secret(),
        &event_cause(),
        &with_grace(15),
        at(17, 5, 1),
    );
    assert!(matches!(before, Decision::Deferred { .. }), "{before:?}");
    let after = decide_at(
        &stuck_secret(),
        &event_cause(),
        &with_grace(15),
        at(17, 5, 2),
    );
    assert_eq!(plan(after).goal, Goal::Rescued);
}

#[test]
fn without_a_creation_date_the_grace_runs_from_the_failure() {
    let mut secret = stuck_secret();
    secret.versions.get_mut("v2").unwrap().created = None;
    let failure = failed(FailedStep::SetSecret, at(16, 58, 0));
    let decision = decide_at(&secret, &failure, &with_grace(15), now());
    assert_eq!(deferred_until(&decision), at(17, 13, 0));
}

#[test]
fn version_newer_than_the_failure_is_rechecked_after_its_own_grace() {
    let earlier_failure = failed(FailedStep::SetSecret, at(16, 0, 0));
    let decision = decide_at(&stuck_secret(), &earlier_failure, &with_grace(15), now());
    assert_eq!(deferred_until(&decision), at(17, 5, 2));
    // With no grace, that rotation still gets LATER_ROTATION_MIN_AGE (it may be running,
    // healthy), and its re-check keeps applying it.
    let decision = decide_at(&stuck_secret(), &earlier_failure, &config(), now());
    assert_eq!(deferred_until(&decision), at(17, 5, 2));
    let Decision::Deferred { min_age, .. } = decision else {
        unreachable!()
    };
    assert_eq!(min_age, LATER_ROTATION_MIN_AGE);
    let recheck = Cause::Recheck {
        version_id: "v2".into(),
        step: FailedStep::Unknown,
        first_deferred_at: now(),
        min_age,
    };
    let early = decide_at(&stuck_secret(), &recheck, &config(), at(17, 4, 0));
    assert!(matches!(early, Decision::Deferred { .. }), "{early:?}");
    let due = decide_at(&stuck_secret(), &recheck, &config(), at(17, 5, 2));
    assert_eq!(plan(due).goal, Goal::Rescued);
}

#[test]
fn operator_waits_for_a_young_version_unless_forced() {
    let waits = decide_at(
        &stuck_secret(),
        &Cause::Operator { force: false },
        &with_grace(15),
        now(),
    );
    let Decision::Deferred { reason, .. } = &waits else {
        panic!("expected deferred, got {waits:?}");
    };
    assert!(reason.contains("force"), "{reason}");
    let forced = decide_at(
        &stuck_secret(),
        &Cause::Operator { force: true },
        &with_grace(15),
        now(),
    );
    assert_eq!(plan(forced).goal, Goal::Rescued);
}

#[test]
fn operator_never_waits_on_an_unknown_age() {
    let mut secret = stuck_secret();
    secret.versions.get_mut("v2").unwrap().created = None;
    let decision = decide_at(
        &secret,
        &Cause::Operator { force: false },
        &with_grace(15),
        now(),
    );
    assert_eq!(plan(decision).goal, Goal::Rescued);
}

#[test]
fn recheck_of_a_version_now_old_enough_rescues_with_the_step_it_carries() {
    let cause = recheck("v2", FailedStep::CreateSecret, at(17, 0, 0));
    let plan = plan(decide_at(
        &stuck_secret(),
        &cause,
        &with_grace(15),
        at(17, 6, 0),
    ));
    assert_eq!(plan.goal, Goal::Rescued);
    assert_eq!(plan.reason, "rotation failed in createSecret");
    assert!(!plan.may_hold_live_credential);
}

#[test]
fn recheck_finding_another_stuck_version_rescues_it_with_the_step_unknown() {
    let cause = recheck("v-old", FailedStep::CreateSecret, at(16, 0, 0));
    let plan = plan(decide_at(
        &stuck_secret(),
        &cause,
        &with_grace(15),
        at(17, 6, 0),
    ));
    assert_eq!(plan.stuck_version_id.as_deref(), Some("v2"));
    assert_eq!(plan.reason, "rotation failed at an unknown step");
    assert!(plan.may_hold_live_credential);
}

#[test]
fn recheck_of_a_healed_rotation_is_nothing_to_do() {
    let mut healed = stuck_secret();
    healed.versions = BTreeMap::from([
        ("v1".into(), version(&["AWSPREVIOUS"], Some(at(16, 0, 0)))),
        ("v2".into(), version(&["AWSCURRENT"], Some(at(16, 50, 2)))),
    ]);
    let cause = recheck("v2", FailedStep::TestSecret, at(17, 0, 0));
    let decision = decide_at(&healed, &cause, &with_grace(15), at(17, 6, 0));
    assert!(
        matches!(decision, Decision::NothingToDo { .. }),
        "{decision:?}"
    );
}

#[test]
fn recheck_still_too_young_is_deferred_again() {
    let cause = recheck("v2", FailedStep::TestSecret, at(17, 0, 0));
    let decision = decide_at(&stuck_secret(), &cause, &with_grace(15), at(17, 1, 0));
    assert_eq!(deferred_until(&decision), at(17, 5, 2));
}

#[test]
fn recheck_without_a_creation_date_counts_from_the_first_deferral() {
    let mut secret = stuck_secret();
    secret.versions.get_mut("v2").unwrap().created = None;
    let cause = recheck("v2", FailedStep::TestSecret, at(17, 0, 0));
    let decision = decide_at(&secret, &cause, &with_grace(15), at(17, 1, 0));
    assert_eq!(deferred_until(&decision), at(17, 15, 0));
    let decision = decide_at(&secret, &cause, &with_grace(15), at(17, 15, 0));
    assert!(matches!(decision, Decision::Act(_)), "{decision:?}");
}

#[test]
fn recheck_still_young_a_day_after_the_first_deferral_needs_attention() {
    // A grace longer than a day keeps the version young past the limit.
    let config = with_grace(25 * 60);
    let first = at(16, 0, 0) - TimeDelta::hours(24);
    let cause = recheck("v2", FailedStep::TestSecret, first);
    let plan = plan(decide_at(&stuck_secret(), &cause, &config, now()));
    assert_eq!(plan.goal, Goal::NeedsAttention);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.reason.contains("24 h"), "{}", plan.reason);
    // Just under a day: deferred again.
    let cause = recheck("v2", FailedStep::TestSecret, now() - TimeDelta::hours(23));
    let decision = decide_at(&stuck_secret(), &cause, &config, now());
    assert!(
        matches!(decision, Decision::Deferred { .. }),
        "{decision:?}"
    );
}

#[test]
fn recheck_a_day_late_but_old_enough_still_rescues() {
    let cause = recheck("v2", FailedStep::TestSecret, now() - TimeDelta::hours(30));
    let plan = plan(decide_at(
        &stuck_secret(),
        &cause,
        &with_grace(15),
        at(18, 0, 0),
    ));
    assert_eq!(plan.goal, Goal::Rescued);
}
