//! End to end against a real moto server: each test seeds a state through the SDK, sends a
//! trigger through `App::handle` with a real SDK client, reads the end state back from the
//! emulator and asserts it (labels, `RotationEnabled`, tags) along with the returned summary.
//!
//! One moto per test binary (see `common`); tests run in parallel and use unique secret names.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use rotation_rescue::handler::HandlerError;
use rotation_rescue::outcome::{Outcome, SecretReport, Summary};
use serde_json::json;

/// The one report of an event's summary.
fn only_report(summary: &Summary) -> &SecretReport {
    assert_eq!(summary.secrets.len(), 1, "{summary:#?}");
    &summary.secrets[0]
}

fn action_names(report: &SecretReport) -> Vec<&'static str> {
    report.actions.iter().map(|a| a.name()).collect()
}

/// The keep-label a rescue reported, checked for its shape: `RESCUED_` and a time between
/// `since` (taken before the seed) and now.
fn reported_keep_label(report: &SecretReport, since: DateTime<Utc>) -> String {
    let label = report
        .keep_label
        .clone()
        .expect("a keep-label in the report");
    assert_keep_label(&label, "RESCUED", since, Utc::now());
    label
}

/// Asserts the state a rescue of `seeded` leaves, with `keep_label` on the stuck version, and
/// returns it.
async fn assert_rescued_state(seeded: &Seeded, keep_label: &str) -> State {
    let after = state(&client(), &seeded.arn).await;
    let pending = seeded.pending();
    assert_eq!(after.labels_of(pending), vec![keep_label], "{after:#?}");
    assert!(
        after.holders(PENDING).is_empty(),
        "AWSPENDING gone: {after:#?}"
    );
    assert_eq!(after.holders(CURRENT), vec![seeded.current.as_str()]);
    assert_eq!(after.labels_of(&seeded.current), vec![CURRENT]);
    assert_eq!(after.rotation_enabled, Some(false), "rotation cancelled");
    assert_eq!(
        after.labels_starting_with("RESCUED_"),
        vec![(pending, keep_label)],
        "exactly one keep-label"
    );
    after
}

#[tokio::test]
async fn rescues_failed_rotation_and_keeps_pending_version() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("rescues")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    assert_eq!(summary.trigger, "rotation_failed");
    assert!(!summary.dry_run);
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(report.secret_arn, seeded.arn);
    assert_eq!(report.stuck_version_id.as_deref(), Some(seeded.pending()));
    let keep_label = reported_keep_label(report, since);
    assert_eq!(
        action_names(report),
        [
            "cancel_rotation",
            "attach_label",
            "remove_pending",
            "tag_secret"
        ]
    );
    assert!(report.warnings.is_empty(), "{report:#?}");
    // setSecret may already have changed the target system: the report says so.
    let note = report
        .live_credential_note
        .as_deref()
        .expect("live-credential note");
    assert!(
        note.contains(seeded.pending()) && note.contains(&keep_label),
        "{note}"
    );

    let after = assert_rescued_state(&seeded, &keep_label).await;
    assert_eq!(
        after.rotation_lambda_arn.as_deref(),
        Some(ROTATION_LAMBDA_ARN)
    );
    let rescued_at = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let expected_tags = [
        ("rotation-rescue:keep-label", keep_label.as_str()),
        ("rotation-rescue:kept-version", seeded.pending()),
        ("rotation-rescue:reason", "rotation failed in setSecret"),
        ("rotation-rescue:rescued-at", rescued_at.as_str()),
    ];
    assert_eq!(after.rescue_tags(), expected_tags.into_iter().collect());
    let versions = |s: &State| s.labels.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        versions(&after),
        versions(&before),
        "no version created or lost"
    );
}

#[tokio::test]
async fn keeps_previous_label_where_it_was() {
    let client = client();
    let since = Utc::now();
    let name = unique_name("previous");
    let mut seeded = create_secret(&client, &name, &[]).await;
    // A second value makes the first one AWSPREVIOUS; then the rotation fails.
    let put = client
        .put_secret_value()
        .secret_id(&seeded.arn)
        .secret_string("second")
        .send()
        .await
        .unwrap();
    let previous = std::mem::replace(&mut seeded.current, put.version_id().unwrap().to_owned());
    seeded.pending = Some(start_failed_rotation(&client, &seeded.arn).await);
    let before = state(&client, &seeded.arn).await;
    assert_eq!(before.holders(PREVIOUS), vec![previous.as_str()]);
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "testSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued);
    let after = assert_rescued_state(&seeded, &reported_keep_label(report, since)).await;
    assert_eq!(after.labels_of(&previous), vec![PREVIOUS]);
}

#[tokio::test]
async fn create_secret_failure_rescues_without_live_credential_note() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("create-step")).await;
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "createSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued);
    assert_eq!(report.live_credential_note, None, "{report:#?}");
    let after = state(&client, &seeded.arn).await;
    assert_eq!(
        after.tags.get("rotation-rescue:reason").map(String::as_str),
        Some("rotation failed in createSecret")
    );
}

#[tokio::test]
async fn same_event_twice_rescues_once_then_finds_nothing_to_do() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("twice")).await;
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "finishSecret", failure_now());
    let app = moto_app(&[]);

    let first = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
    assert_eq!(only_report(&first).outcome, Outcome::Rescued);
    let keep_label = reported_keep_label(only_report(&first), since);
    let after_first = assert_rescued_state(&seeded, &keep_label).await;

    let later = now + TimeDelta::seconds(30);
    let second = app.handle(&event, FUNCTION_ARN, later).await.unwrap();
    let report = only_report(&second);
    assert_eq!(report.outcome, Outcome::NothingToDo, "{report:#?}");
    assert!(report.actions.is_empty());
    assert_eq!(
        state(&client, &seeded.arn).await,
        after_first,
        "state unchanged"
    );
}

#[tokio::test]
async fn second_failed_rotation_after_a_rescue_keeps_both_versions() {
    let client = client();
    let since = Utc::now();
    let first = failed_rotation(&client, &unique_name("second-failure")).await;
    let app = moto_app(&[]);
    let now = Utc::now();
    let event = rotation_failed_event(&first.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
    let first_label = reported_keep_label(only_report(&summary), since);

    // Someone turns rotation back on, and it fails again.
    let mut second = first.clone();
    second.pending = Some(start_failed_rotation(&client, &first.arn).await);
    assert_ne!(second.pending, first.pending);
    let now = Utc::now();
    let event = rotation_failed_event(&second.arn, "createSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    let second_label = report.keep_label.clone().unwrap();
    assert_ne!(second_label, first_label);
    let after = state(&client, &first.arn).await;
    assert_eq!(after.labels_of(first.pending()), vec![first_label.as_str()]);
    assert_eq!(
        after.labels_of(second.pending()),
        vec![second_label.as_str()]
    );
    assert_eq!(after.labels_of(&first.current), vec![CURRENT]);
    assert!(after.holders(PENDING).is_empty());
    assert_eq!(after.rotation_enabled, Some(false));
    assert_eq!(
        after
            .tags
            .get("rotation-rescue:kept-version")
            .map(String::as_str),
        Some(second.pending()),
        "the tags describe the latest rescue"
    );
}

#[tokio::test]
async fn concurrent_handles_of_one_event_both_succeed_with_one_keep_label() {
    // On AWS both handles read the one CreatedDate of the stuck version and so pick one label.
    // On moto each reads the time of its own describe call (see `State`): when the two calls
    // fall in different seconds of the clock (a loaded machine), the labels differ for a reason
    // that AWS does not have, and the run is repeated on a fresh secret.
    for attempt in 1..=3 {
        if handle_concurrently_and_check(attempt).await {
            return;
        }
    }
    panic!("the two handles' describe calls fell in different seconds three times");
}

/// One run of the concurrent test; false when moto's clock split the two handles.
async fn handle_concurrently_and_check(attempt: usize) -> bool {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("concurrent")).await;
    let (app_a, app_b) = (moto_app(&[]), moto_app(&[]));
    start_of_next_second().await;
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());

    let (a, b) = tokio::join!(
        app_a.handle(&event, FUNCTION_ARN, now),
        app_b.handle(&event, FUNCTION_ARN, now)
    );

    let (a, b) = (a.expect("first handle"), b.expect("second handle"));
    let reports = [only_report(&a), only_report(&b)];
    assert!(
        reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Rescued | Outcome::NothingToDo)),
        "{a:#?}\n{b:#?}"
    );
    let rescued: Vec<&SecretReport> = reports
        .into_iter()
        .filter(|r| r.outcome == Outcome::Rescued)
        .collect();
    assert!(!rescued.is_empty(), "{a:#?}\n{b:#?}");
    let keep_label = reported_keep_label(rescued[0], since);
    if rescued
        .iter()
        .any(|r| r.keep_label.as_ref() != Some(&keep_label))
    {
        eprintln!("attempt {attempt}: moto's clock split the handles: {rescued:#?}");
        return false;
    }
    // Both usually describe before either acts, so both attach the same keep-label to the same
    // version; moto then lists that label twice on it (AWS holds a label once per version).
    // `State` reads labels as a set, so this checks: one keep-label, on the stuck version only.
    let after = assert_rescued_state(&seeded, &keep_label).await;
    assert_eq!(
        after.tags.get("rotation-rescue:keep-label"),
        Some(&keep_label)
    );

    // And a third, sequential, handle changes nothing more.
    let third = moto_app(&[])
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .unwrap();
    assert_eq!(only_report(&third).outcome, Outcome::NothingToDo);
    assert_eq!(state(&client, &seeded.arn).await, after);
    true
}

#[tokio::test]
async fn healthy_secret_is_nothing_to_do_and_rotation_stays_enabled() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("healthy")).await;
    // Finish the rotation by hand: the pending version becomes current, AWSPENDING goes.
    move_label(
        &client,
        &seeded.arn,
        CURRENT,
        Some(&seeded.current),
        Some(seeded.pending()),
    )
    .await;
    move_label(&client, &seeded.arn, PENDING, Some(seeded.pending()), None).await;
    let before = state(&client, &seeded.arn).await;
    assert_eq!(before.rotation_enabled, Some(true));
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "testSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::NothingToDo, "{report:#?}");
    assert!(report.actions.is_empty());
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.rotation_enabled, Some(true), "rotation not cancelled");
    assert_eq!(after, before);
}

#[tokio::test]
async fn pending_on_the_current_version_is_nothing_to_do() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("pending-on-current")).await;
    move_label(
        &client,
        &seeded.arn,
        PENDING,
        Some(seeded.pending()),
        Some(&seeded.current),
    )
    .await;
    let before = state(&client, &seeded.arn).await;
    assert_eq!(before.labels_of(&seeded.current), vec![CURRENT, PENDING]);
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "finishSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    assert_eq!(only_report(&summary).outcome, Outcome::NothingToDo);
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn pending_staged_by_hand_is_skipped_for_an_event() {
    let client = client();
    let seeded = pending_without_rotation(&client, &unique_name("by-hand-event")).await;
    let before = state(&client, &seeded.arn).await;
    assert_eq!(before.rotation_enabled, None);
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "createSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(
        report.reason.contains("no rotation function"),
        "{}",
        report.reason
    );
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn pending_staged_by_hand_is_rescued_when_an_operator_names_it() {
    let client = client();
    let since = Utc::now();
    let seeded = pending_without_rotation(&client, &unique_name("by-hand-operator")).await;
    let now = Utc::now();

    let request = operator_request(&[&seeded.name], false);
    let summary = moto_app(&[])
        .handle(&request, FUNCTION_ARN, now)
        .await
        .unwrap();

    assert_eq!(summary.trigger, "operator");
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(report.secret_arn, seeded.arn, "reported by ARN");
    let keep_label = reported_keep_label(report, since);
    // Rotation was never configured: nothing to cancel (moto would refuse the call).
    assert_eq!(
        action_names(report),
        ["attach_label", "remove_pending", "tag_secret"]
    );
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec![keep_label.as_str()]);
    assert!(after.holders(PENDING).is_empty());
    assert_eq!(after.holders(CURRENT), vec![seeded.current.as_str()]);
    assert_eq!(after.rotation_enabled, None);
    assert_eq!(
        after.tags.get("rotation-rescue:reason").map(String::as_str),
        Some("rotation failed at an unknown step")
    );
}

#[tokio::test]
async fn missing_secret_is_skipped() {
    let arn = format!(
        "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{}-AbCdEf",
        unique_name("missing")
    );
    let now = Utc::now();

    let event = rotation_failed_event(&arn, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert_eq!(report.secret_arn, arn);
    assert!(report.reason.contains("not found"), "{}", report.reason);
}

#[tokio::test]
async fn secret_scheduled_for_deletion_is_skipped_and_untouched() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("deleted")).await;
    client
        .delete_secret()
        .secret_id(&seeded.arn)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let before = state(&client, &seeded.arn).await;
    assert!(before.deleted);
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(
        report.reason.contains("scheduled for deletion"),
        "{}",
        report.reason
    );
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn replica_secret_is_skipped_in_its_region() {
    let primary_client = client();
    let name = unique_name("replica");
    let seeded = create_secret_with(&primary_client, &name, &[], &[REPLICA_REGION]).await;
    let pending = start_failed_rotation(&primary_client, &seeded.arn).await;
    let replica_client = client_for(moto_endpoint(), REPLICA_REGION);
    let replica_arn = seeded.arn.replace(REGION, REPLICA_REGION);
    let before = state(&replica_client, &replica_arn).await;
    assert_eq!(before.arn, replica_arn);
    assert_eq!(before.holders(PENDING), vec![pending.as_str()]);
    let now = Utc::now();

    let app = app(
        replica_client.clone(),
        config(&[("AWS_REGION", REPLICA_REGION)]),
    );
    let event = rotation_failed_event_in(REPLICA_REGION, &replica_arn, "setSecret", failure_now());
    let function_arn = FUNCTION_ARN.replace(REGION, REPLICA_REGION);
    let summary = app.handle(&event, &function_arn, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(report.reason.contains("replica"), "{}", report.reason);
    assert!(
        report.reason.contains(REGION),
        "names the primary: {}",
        report.reason
    );
    assert_eq!(state(&replica_client, &replica_arn).await, before);
    let primary = state(&primary_client, &seeded.arn).await;
    assert_eq!(primary.holders(PENDING), vec![pending.as_str()]);
    assert_eq!(primary.rotation_enabled, Some(true));
}

#[tokio::test]
async fn secret_outside_the_name_prefix_is_skipped() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("dev/outside-prefix")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let app = moto_app(&[("RESCUE_SCOPE_NAME_PREFIX", "prod/")]);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(report.reason.contains("prod/"), "{}", report.reason);
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn secret_inside_the_name_prefix_is_rescued() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("prod/inside-prefix")).await;
    let now = Utc::now();

    let app = moto_app(&[("RESCUE_SCOPE_NAME_PREFIX", "prod/")]);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    assert_eq!(only_report(&summary).outcome, Outcome::Rescued);
}

#[tokio::test]
async fn secret_without_the_scope_tag_is_skipped() {
    let client = client();
    let untagged = failed_rotation(&client, &unique_name("no-scope-tag")).await;
    let other_value = failed_rotation_tagged(
        &client,
        &unique_name("other-scope-tag"),
        &[("rescue", "no")],
    )
    .await;
    let now = Utc::now();
    let app = moto_app(&[("RESCUE_SCOPE_TAG", "rescue=yes")]);

    for seeded in [&untagged, &other_value] {
        let before = state(&client, &seeded.arn).await;
        let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
        let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

        let report = only_report(&summary);
        assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
        assert!(report.reason.contains("rescue=yes"), "{}", report.reason);
        assert_eq!(state(&client, &seeded.arn).await, before);
    }
}

#[tokio::test]
async fn secret_with_the_scope_tag_is_rescued() {
    let client = client();
    let tags = [("rescue", "yes")];
    let seeded = failed_rotation_tagged(&client, &unique_name("scope-tag"), &tags).await;

    // Each event is made right before its handle (see `rotation_failed_event`).
    for scope in ["rescue", "rescue=yes"] {
        let app = moto_app(&[("RESCUE_SCOPE_TAG", scope), ("RESCUE_DRY_RUN", "true")]);
        let now = Utc::now();
        let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
        let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
        assert_eq!(only_report(&summary).outcome, Outcome::Planned, "{scope}");
    }
    let app = moto_app(&[("RESCUE_SCOPE_TAG", "rescue=yes")]);
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
    assert_eq!(only_report(&summary).outcome, Outcome::Rescued);
    let after = state(&client, &seeded.arn).await;
    assert_eq!(
        after.tags.get("rescue").map(String::as_str),
        Some("yes"),
        "own tags kept"
    );
}

#[tokio::test]
async fn managed_secret_is_skipped_unless_allowed() {
    let client = client();
    let since = Utc::now();
    // moto marks a secret as managed through this reserved tag (AWS-FACTS 9).
    let tags = [("aws:secretsmanager:owningService", "rds")];
    let seeded = failed_rotation_tagged(&client, &unique_name("managed"), &tags).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());

    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(report.reason.contains("rds"), "{}", report.reason);
    assert_eq!(state(&client, &seeded.arn).await, before);

    let app = moto_app(&[("RESCUE_ALLOW_MANAGED", "true")]);
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued);
    assert_rescued_state(&seeded, &reported_keep_label(report, since)).await;
}

#[tokio::test]
async fn arn_of_another_account_is_skipped_without_a_call() {
    // The client points at a closed port: any call would make the secret `failed`.
    let app = app(client_for(&dead_endpoint(), REGION), config(&[]));
    let now = Utc::now();
    let other_account = "arn:aws:secretsmanager:us-east-1:210987654321:secret:prod/db-AbCdEf";
    let other_region = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf";

    for (arn, expected) in [(other_account, "210987654321"), (other_region, "eu-west-1")] {
        let event = rotation_failed_event(arn, "setSecret", failure_now());
        let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();
        let report = only_report(&summary);
        assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
        assert!(report.reason.contains(expected), "{}", report.reason);
    }
}

#[tokio::test]
async fn account_comes_from_configuration_when_the_function_arn_is_a_placeholder() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("placeholder-arn")).await;
    let now = Utc::now();
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let foreign = "arn:aws:secretsmanager:us-east-1:210987654321:secret:prod/db-AbCdEf";

    // cargo-lambda's emulator passes the literal `function-arn`.
    let summary = moto_app(&[])
        .handle(&event, "function-arn", now)
        .await
        .unwrap();
    assert_eq!(only_report(&summary).outcome, Outcome::Rescued);
    let foreign_event = rotation_failed_event(foreign, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&foreign_event, "function-arn", now)
        .await
        .unwrap();
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(report.reason.contains("210987654321"), "{}", report.reason);
}

#[tokio::test]
async fn existing_custom_label_keeps_the_version_and_no_keep_label_is_added() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("custom-label")).await;
    move_label(
        &client,
        &seeded.arn,
        "ops-hold",
        None,
        Some(seeded.pending()),
    )
    .await;
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "testSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(report.keep_label.as_deref(), Some("ops-hold"));
    assert_eq!(
        action_names(report),
        ["cancel_rotation", "remove_pending", "tag_secret"]
    );
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec!["ops-hold"]);
    assert!(
        after.labels_starting_with("RESCUED_").is_empty(),
        "{after:#?}"
    );
    assert!(after.holders(PENDING).is_empty());
    assert_eq!(after.labels_of(&seeded.current), vec![CURRENT]);
    assert_eq!(after.rotation_enabled, Some(false));
    assert_eq!(
        after
            .tags
            .get("rotation-rescue:keep-label")
            .map(String::as_str),
        Some("ops-hold")
    );
}

#[tokio::test]
async fn keep_label_taken_by_another_version_uses_the_id_suffixed_label() {
    // The keep-label is `RESCUED_` and the stuck version's CreatedDate, which moto answers with
    // the time of the call (see `State`): the name is occupied on AWSCURRENT's version for every
    // second the handle may run in. Should the handle run later than that (a loaded machine),
    // the run is repeated on a fresh secret.
    for attempt in 1..=3 {
        if take_keep_label_and_check(attempt).await {
            return;
        }
    }
    panic!("the handle ran after the window of taken labels three times");
}

/// One run of the test above; false when the handle ran after the window.
async fn take_keep_label_and_check(attempt: usize) -> bool {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("label-taken")).await;
    // 17 labels, 19 in all with AWSCURRENT and AWSPENDING: under the 20-label quota.
    let from = Utc::now();
    let taken: Vec<String> = (-1..16)
        .map(|s| {
            format!(
                "RESCUED_{}",
                (from + TimeDelta::seconds(s)).format("%Y%m%dT%H%M%SZ")
            )
        })
        .collect();
    for label in &taken {
        move_label(&client, &seeded.arn, label, None, Some(&seeded.current)).await;
    }
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    let label = report.keep_label.clone().expect("keep-label");
    let Some(base) = label.strip_suffix(&format!("_{}", seeded.pending())) else {
        assert!(!taken.contains(&label), "{label:?} was taken: {report:#?}");
        eprintln!("attempt {attempt}: the handle ran after the window: {label}");
        return false;
    };
    assert!(
        taken.iter().any(|t| t == base),
        "{base:?} is not one of {taken:?}"
    );
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec![label.as_str()]);
    assert_eq!(
        after.labels_of(&seeded.current),
        before.labels_of(&seeded.current),
        "the other version's labels are untouched"
    );
    assert_eq!(after.holders(base), vec![seeded.current.as_str()]);
    assert!(after.holders(PENDING).is_empty());
    true
}

#[tokio::test]
async fn no_current_version_cancels_and_leaves_labels_for_a_person() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("no-current")).await;
    // moto lets AWSCURRENT be removed without a move (AWS-FACTS 9).
    move_label(&client, &seeded.arn, CURRENT, Some(&seeded.current), None).await;
    let before = state(&client, &seeded.arn).await;
    assert!(before.holders(CURRENT).is_empty());
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "finishSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:#?}");
    assert_eq!(action_names(report), ["cancel_rotation"]);
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.rotation_enabled, Some(false));
    assert_eq!(after.labels, before.labels, "labels untouched");
    assert_eq!(after.tags, before.tags);
}

#[tokio::test]
async fn version_newer_than_the_failure_is_deferred_and_untouched() {
    let client = client();
    let sqs = sqs_client();
    let queue_url = create_queue(&sqs, "newer").await;
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("newer")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    // The failure an hour before the stuck version was made: a later rotation made it. That
    // rotation may still be running, healthy, so its re-check waits LATER_ROTATION_MIN_AGE
    // (15 minutes) from the version's creation, even with the grace at 0.
    let app = moto_app_with_queue(
        &[("RESCUE_RECHECK_MIN_DELAY", "1s")],
        sqs.clone(),
        &queue_url,
    );
    let event = rotation_failed_event(&seeded.arn, "setSecret", since - TimeDelta::hours(1));
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert_eq!(report.stuck_version_id.as_deref(), Some(seeded.pending()));
    // moto dates the version at the describe, a moment after `now`: 15 minutes, give or take.
    let delay = report.recheck_in_seconds.expect("a re-check was sent");
    assert!((898..=900).contains(&delay), "{report:#?}");
    assert!(report.actions.is_empty());
    assert_eq!(state(&client, &seeded.arn).await, before);

    // The message waits in the queue, delayed (moto honours DelaySeconds).
    let delayed = QueueAttributeName::ApproximateNumberOfMessagesDelayed;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(delayed.clone())
        .send()
        .await
        .expect("queue attributes");
    let waiting = attributes.attributes().and_then(|a| a.get(&delayed));
    assert_eq!(waiting.map(String::as_str), Some("1"), "{attributes:?}");
}

/// Without a re-check queue a deferred secret cannot be looked at again: it is `failed` (nothing
/// is dropped silently), and the event invocation fails so that Lambda retries it.
#[tokio::test]
async fn deferred_secret_without_a_queue_stays_deferred_and_says_so() {
    // RESCUE_GRACE=0 runs without a queue: a version of a later rotation is left to that
    // rotation, which reports its own failure; the invocation succeeds.
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("newer-no-queue")).await;
    let before = state(&client, &seeded.arn).await;

    let event = rotation_failed_event(&seeded.arn, "setSecret", since - TimeDelta::hours(1));
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .expect("a deferral without a queue is no failure");

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert!(
        report.reason.contains("RESCUE_RECHECK_QUEUE_URL"),
        "{}",
        report.reason
    );
    assert_eq!(report.recheck_in_seconds, None);
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn dry_run_configuration_plans_without_changing_anything() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("dry-run-config")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let app = moto_app(&[("RESCUE_DRY_RUN", "true")]);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    assert!(summary.dry_run);
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Planned, "{report:#?}");
    assert_eq!(
        action_names(report),
        [
            "cancel_rotation",
            "attach_label",
            "remove_pending",
            "tag_secret"
        ]
    );
    reported_keep_label(report, since);
    assert_eq!(state(&client, &seeded.arn).await, before, "state unchanged");

    // An operator's `dry_run: false` does not override a dry-run deployment.
    let request = operator_request(&[&seeded.arn], false);
    let summary = app.handle(&request, FUNCTION_ARN, now).await.unwrap();
    assert!(summary.dry_run);
    assert_eq!(only_report(&summary).outcome, Outcome::Planned);
    assert_eq!(state(&client, &seeded.arn).await, before, "state unchanged");
}

#[tokio::test]
async fn operator_dry_run_plans_without_changing_anything() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("dry-run-operator")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let request = operator_request(&[&seeded.name], true);
    let summary = moto_app(&[])
        .handle(&request, FUNCTION_ARN, now)
        .await
        .unwrap();

    assert!(summary.dry_run);
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Planned, "{report:#?}");
    assert!(!report.actions.is_empty());
    assert_eq!(state(&client, &seeded.arn).await, before, "state unchanged");
}

#[tokio::test]
async fn operator_call_reports_each_named_secret_including_a_missing_one() {
    let client = client();
    let stuck = failed_rotation(&client, &unique_name("operator-stuck")).await;
    let healthy = create_secret(&client, &unique_name("operator-healthy"), &[]).await;
    let by_hand = pending_without_rotation(&client, &unique_name("operator-by-hand")).await;
    let missing = unique_name("operator-missing");
    let now = Utc::now();

    let names = [
        stuck.name.as_str(),
        healthy.arn.as_str(),
        missing.as_str(),
        by_hand.name.as_str(),
        stuck.name.as_str(), // named twice: handled once
    ];
    let summary = moto_app(&[])
        .handle(&operator_request(&names, false), FUNCTION_ARN, now)
        .await
        .unwrap();

    let reports: Vec<(&str, Outcome)> = summary
        .secrets
        .iter()
        .map(|r| (r.secret_arn.as_str(), r.outcome))
        .collect();
    assert_eq!(
        reports,
        [
            (stuck.arn.as_str(), Outcome::Rescued),
            (healthy.arn.as_str(), Outcome::NothingToDo),
            (missing.as_str(), Outcome::Skipped),
            (by_hand.arn.as_str(), Outcome::Rescued),
        ],
        "{summary:#?}"
    );
    assert_eq!(summary.counts.get(&Outcome::Rescued), Some(&2));
    assert_eq!(summary.counts.get(&Outcome::Skipped), Some(&1));
    assert_eq!(summary.counts.get(&Outcome::NothingToDo), Some(&1));
    assert!(state(&client, &stuck.arn).await.holders(PENDING).is_empty());
    assert!(
        state(&client, &by_hand.arn)
            .await
            .holders(PENDING)
            .is_empty()
    );
}

#[tokio::test]
async fn tag_secrets_false_rescues_without_tags() {
    let client = client();
    let tags = [("team", "db")];
    let since = Utc::now();
    let seeded = failed_rotation_tagged(&client, &unique_name("no-tags"), &tags).await;
    let now = Utc::now();

    let app = moto_app(&[("RESCUE_TAG_SECRETS", "false")]);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert!(!action_names(report).contains(&"tag_secret"));
    let after = assert_rescued_state(&seeded, &reported_keep_label(report, since)).await;
    assert_eq!(after.tags, [("team".to_owned(), "db".to_owned())].into());
}

#[tokio::test]
async fn custom_keep_label_prefix_is_used() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("prefix")).await;
    let now = Utc::now();

    let app = moto_app(&[("RESCUE_KEEP_LABEL_PREFIX", "KEEP")]);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued);
    let label = report.keep_label.clone().unwrap();
    assert_keep_label(&label, "KEEP", since, Utc::now());
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec![label.as_str()]);
}

#[tokio::test]
async fn interrupted_rescue_is_finished_from_its_marker_tag() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("interrupted")).await;
    // What a rescue interrupted on the label-quota path leaves: rotation cancelled, the marker
    // tag naming the version, AWSPENDING removed, no keep-label yet.
    client
        .cancel_rotate_secret()
        .secret_id(&seeded.arn)
        .send()
        .await
        .unwrap();
    client
        .tag_resource()
        .secret_id(&seeded.arn)
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("rotation-rescue:unlabelled-version")
                .value(seeded.pending())
                .build(),
        )
        .send()
        .await
        .unwrap();
    move_label(&client, &seeded.arn, PENDING, Some(seeded.pending()), None).await;
    let before = state(&client, &seeded.arn).await;
    assert!(before.labels_of(seeded.pending()).is_empty(), "{before:#?}");
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(
        action_names(report),
        ["attach_label", "unmark_version", "tag_secret"]
    );
    let keep_label = reported_keep_label(report, since);
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec![keep_label.as_str()]);
    assert!(
        !after
            .tags
            .contains_key("rotation-rescue:unlabelled-version")
    );
    // The finished rescue is recorded like any other.
    assert_eq!(
        after
            .tags
            .get("rotation-rescue:kept-version")
            .map(String::as_str),
        Some(seeded.pending())
    );
}

#[tokio::test]
async fn other_service_event_needs_nothing() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("succeeded-event")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();
    let mut event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    event["detail"]["eventName"] = json!("RotationSucceeded");

    let summary = moto_app(&[])
        .handle(&event, FUNCTION_ARN, now)
        .await
        .unwrap();

    assert_eq!(summary.trigger, "RotationSucceeded");
    assert_eq!(only_report(&summary).outcome, Outcome::NothingToDo);
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn unrecognized_payload_is_invalid_event_and_touches_nothing() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("invalid")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();
    let app = moto_app(&[]);

    let mut scheduled = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    scheduled["detail-type"] = json!("Scheduled Event");
    scheduled["source"] = json!("aws.events");
    let payloads = [
        json!({"SecretId": seeded.arn}),
        json!({"secrets": [seeded.arn], "dryrun": true}),
        scheduled,
        json!([seeded.arn]),
    ];
    for payload in payloads {
        let err = app.handle(&payload, FUNCTION_ARN, now).await.unwrap_err();
        assert!(
            matches!(err, HandlerError::InvalidEvent(_)),
            "{payload}: {err:?}"
        );
    }
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
async fn dead_emulator_fails_the_secret_and_the_event_invocation() {
    let app = app(client_for(&dead_endpoint(), REGION), config(&[]));
    let arn = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-AbCdEf");
    let now = Utc::now();

    let event = rotation_failed_event(&arn, "setSecret", failure_now());
    let err = app.handle(&event, FUNCTION_ARN, now).await.unwrap_err();
    let HandlerError::SecretsFailed {
        failed,
        total,
        first,
    } = &err
    else {
        panic!("expected SecretsFailed, got {err:?}");
    };
    assert_eq!((*failed, *total), (1, 1));
    assert!(
        first.contains(&arn) && first.contains("DescribeSecret"),
        "{first}"
    );

    // An operator's call answers with the summary, the failure in it.
    let request = operator_request(&[&arn], false);
    let summary = app.handle(&request, FUNCTION_ARN, now).await.unwrap();
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert_eq!(summary.counts.get(&Outcome::Failed), Some(&1));
}
