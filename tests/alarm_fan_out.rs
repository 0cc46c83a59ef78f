//! An alarm on a rotation function, against the emulator (moto): it lists every secret, rescues
//! exactly the stuck secrets of the alarmed function, changes nothing else, does nothing more when
//! delivered again, defers young stuck versions, and paces its mutating calls.
//!
//! The tests of this binary share one moto and take turns ([`TURN`]): the 1,000-secret fleet
//! would otherwise slow the pacing test's moto, and each test's timings are its own. Each test
//! alarms on rotation functions of its own, so one test's alarm never lists another's secrets as
//! its own; every test checks its own secrets only (by name prefix).

mod common;
mod fleet;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use common::{CURRENT, FUNCTION_ARN, PENDING, TAG_PREFIX};
use fleet::{CallLog, Kind, Listed};
use rotation_rescue::decide::tag;
use rotation_rescue::outcome::Outcome;
use rotation_rescue::queue::RecheckQueue;
use rotation_rescue::secrets::burst_for;

/// One test at a time on this binary's moto.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn count(summary: &rotation_rescue::outcome::Summary, outcome: Outcome) -> usize {
    summary.counts.get(&outcome).copied().unwrap_or(0)
}

/// The mutating calls in `log`.
fn mutating(log: &CallLog) -> BTreeMap<String, usize> {
    log.by_operation()
        .into_iter()
        .filter(|(op, _)| fleet::MUTATING.contains(&op.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_rescues_exactly_the_stuck_secrets_of_the_alarmed_function_once() {
    let _turn = TURN.lock().await;
    let seeder = common::client();
    let prefix = common::unique_name("fan-out");

    let started = Instant::now();
    let secrets = fleet::seed(&seeder, &prefix, &fleet::thousand()).await;
    let seeded_in = started.elapsed();
    assert_eq!(secrets.len(), 1000);
    let before = fleet::snapshot(&seeder, &prefix).await;
    assert_eq!(before.len(), 1000, "every seeded secret is listed");

    let log = CallLog::default();
    let config = common::config(&[("RESCUE_ALARM_MIN_AGE", "0"), ("RESCUE_MAX_RATE", "50")]);
    let app = fleet::paced_app(fleet::logged_client(&log), config);
    let alarm = fleet::event_file("alarm-eventbridge.json");

    let rescue_started = Instant::now();
    let summary = app
        .handle(&alarm, FUNCTION_ARN, Utc::now())
        .await
        .unwrap_or_else(|e| panic!("the alarm's invocation fails: {e}"));
    let rescued_in = rescue_started.elapsed();
    println!(
        "seeded 1,000 secrets in {seeded_in:.1?}; first alarm in {rescued_in:.1?}; calls {:?}",
        log.by_operation()
    );

    // What the alarm resolved to.
    assert_eq!(summary.trigger, "alarm_eventbridge");
    assert_eq!(summary.alarms.len(), 1);
    assert_eq!(summary.alarms[0].outcome, "resolved");
    assert_eq!(summary.alarms[0].functions, ["db-rotator"]);

    // Our own secrets in the report: every live secret of db-rotator, stuck or healthy. The
    // listing omits the one scheduled for deletion.
    let ours: BTreeMap<&str, &fleet::FleetSecret> =
        secrets.iter().map(|s| (s.arn.as_str(), s)).collect();
    let mut reported = BTreeMap::new();
    for report in &summary.secrets {
        if let Some(secret) = ours.get(report.secret_arn.as_str()) {
            reported.insert(secret.name.clone(), report);
        }
    }
    let stuck_alarmed: Vec<&fleet::FleetSecret> = secrets
        .iter()
        .filter(|s| matches!(s.kind, Kind::Stuck { .. }) && fleet::alarmed(&s.kind))
        .collect();
    assert_eq!(stuck_alarmed.len(), 160);
    for secret in &secrets {
        let report = reported.get(&secret.name);
        match (&secret.kind, fleet::alarmed(&secret.kind)) {
            (Kind::Stuck { .. }, true) => {
                let report = report.unwrap_or_else(|| panic!("{} not reported", secret.name));
                assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
                assert_eq!(report.stuck_version_id, secret.pending);
            }
            (Kind::Healthy { .. }, true) => {
                let report = report.unwrap_or_else(|| panic!("{} not reported", secret.name));
                assert_eq!(report.outcome, Outcome::NothingToDo, "{report:?}");
            }
            _ => assert!(report.is_none(), "{} reported: {report:?}", secret.name),
        }
    }
    assert_eq!(reported.len(), 260);
    assert_eq!(summary.failed().count(), 0);

    // Read back: the rescued ones keep their stuck version under a keep-label, without
    // AWSPENDING, rotation off; everything else is exactly as before.
    let after = fleet::snapshot(&seeder, &prefix).await;
    assert_eq!(after.len(), 1000);
    let mut changed = 0;
    for secret in &secrets {
        let (was, now) = (&before[&secret.name], &after[&secret.name]);
        let rescued = matches!(secret.kind, Kind::Stuck { .. }) && fleet::alarmed(&secret.kind);
        if !rescued {
            assert_eq!(now, was, "{} ({:?}) changed", secret.name, secret.kind);
            continue;
        }
        changed += 1;
        assert_rescued(&secret.name, secret.pending.as_deref().unwrap(), was, now);
    }
    assert_eq!(changed, 160);
    let deleted = secrets
        .iter()
        .find(|s| matches!(s.kind, Kind::DeletedStuck { .. }))
        .unwrap();
    let deleted_now = &after[&deleted.name];
    assert!(deleted_now.deleted);
    assert_eq!(
        deleted_now.holders(PENDING),
        [deleted.pending.as_deref().unwrap()]
    );
    assert_eq!(deleted_now.rotation_enabled, Some(true));
    // Confirmed with DescribeSecret for a sample (the listing is what the test compared).
    for secret in [stuck_alarmed[0], stuck_alarmed[115], stuck_alarmed[155]] {
        let state = common::state(&seeder, &secret.arn).await;
        assert_eq!(state.rotation_enabled, Some(false), "{state:#?}");
        assert!(state.holders(PENDING).is_empty(), "{state:#?}");
        let pending = secret.pending.as_deref().unwrap();
        assert_eq!(state.labels_of(pending).len(), 1, "{state:#?}");
        assert!(state.labels_of(pending)[0].starts_with("RESCUED_"));
    }

    // The same alarm again: nothing more to do, and not one mutating call.
    log.clear();
    let again = app
        .handle(&alarm, FUNCTION_ARN, Utc::now())
        .await
        .unwrap_or_else(|e| panic!("the second delivery fails: {e}"));
    assert_eq!(
        mutating(&log),
        BTreeMap::new(),
        "mutating calls on redelivery"
    );
    for report in &again.secrets {
        assert!(
            matches!(report.outcome, Outcome::NothingToDo | Outcome::Skipped),
            "{report:?}"
        );
    }
    let ours_again = again
        .secrets
        .iter()
        .filter(|r| ours.contains_key(r.secret_arn.as_str()))
        .count();
    assert_eq!(ours_again, 260);
    assert_eq!(fleet::snapshot(&seeder, &prefix).await, after);
    println!("whole test in {:.1?}", started.elapsed());
}

/// The keep-label on the stuck version, no AWSPENDING, rotation off, AWSCURRENT where it was,
/// and the rescue recorded in tags.
fn assert_rescued(name: &str, pending: &str, was: &Listed, now: &Listed) {
    assert_eq!(now.rotation_enabled, Some(false), "{name}: {now:?}");
    assert_eq!(now.rotation_arn, was.rotation_arn, "{name}");
    assert!(now.holders(PENDING).is_empty(), "{name}: {now:?}");
    assert_eq!(now.holders(CURRENT), was.holders(CURRENT), "{name}");
    let kept = &now.labels[pending];
    assert_eq!(kept.len(), 1, "{name}: {now:?}");
    assert!(kept[0].starts_with("RESCUED_"), "{name}: {kept:?}");
    assert_eq!(
        now.tags.get(tag::KEPT_VERSION).map(String::as_str),
        Some(pending)
    );
    assert_eq!(now.tags.get(tag::KEEP_LABEL), Some(&kept[0]));
    assert!(now.tags.keys().all(|k| k.starts_with(TAG_PREFIX)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn young_stuck_versions_are_deferred_under_the_default_alarm_min_age() {
    let _turn = TURN.lock().await;
    let seeder = common::client();
    let prefix = common::unique_name("deferred");
    let plan = [(Kind::stuck("deferred-rotator"), 3)];
    let secrets = fleet::seed(&seeder, &prefix, &plan).await;
    let before = fleet::snapshot(&seeder, &prefix).await;

    let sqs = common::sqs_client();
    let url = common::create_queue(&sqs, "deferred").await;

    // RESCUE_ALARM_MIN_AGE at its default (15 minutes); moto's versions look just made.
    let config = common::config(&[
        ("RESCUE_MAX_RATE", "50"),
        ("RESCUE_RECHECK_QUEUE_URL", &url),
        ("RESCUE_ALARM_MIN_AGE", "15m"),
    ]);
    assert_eq!(config.alarm_min_age, Duration::from_secs(15 * 60));
    let log = CallLog::default();
    let app = fleet::paced_app(fleet::logged_client(&log), config)
        .with_queue(RecheckQueue::new(sqs.clone(), &url));
    let summary = app
        .handle(
            &fleet::eventbridge_alarm_on("deferred-rotator"),
            FUNCTION_ARN,
            // Ten seconds after moto's creation dates: young, whatever moto answers.
            Utc::now() + chrono::TimeDelta::seconds(10),
        )
        .await
        .unwrap_or_else(|e| panic!("the alarm's invocation fails: {e}"));

    assert_eq!(summary.secrets.len(), 3, "{summary:#?}");
    for report in &summary.secrets {
        assert_eq!(report.outcome, Outcome::Deferred, "{report:?}");
        assert!(report.reason.contains("RESCUE_ALARM_MIN_AGE"), "{report:?}");
        // The stuck version looks brand new: the re-check comes after the full minimum age.
        let delay = report.recheck_in_seconds.expect("a re-check was sent");
        assert!((890..=900).contains(&delay), "{report:?}");
        assert!(secrets.iter().any(|s| s.pending == report.stuck_version_id));
    }
    assert_eq!(mutating(&log), BTreeMap::new());
    assert_eq!(fleet::snapshot(&seeder, &prefix).await, before);

    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes");
    let delayed = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed))
        .cloned();
    assert_eq!(delayed.as_deref(), Some("3"), "{attributes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_stay_within_rate_plus_burst_in_every_second() {
    let _turn = TURN.lock().await;
    let seeder = common::client();
    let prefix = common::unique_name("paced");
    let secrets = fleet::seed(&seeder, &prefix, &[(Kind::stuck("paced-rotator"), 60)]).await;

    let config = common::config(&[("RESCUE_ALARM_MIN_AGE", "0"), ("RESCUE_MAX_RATE", "20")]);
    let rate = config.max_rate;
    let limit = (rate.get() + burst_for(rate).get()) as usize;
    let log = CallLog::default();
    let app = fleet::paced_app(fleet::logged_client(&log), config);
    let summary = app
        .handle(
            &fleet::eventbridge_alarm_on("paced-rotator"),
            FUNCTION_ARN,
            Utc::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("the alarm's invocation fails: {e}"));
    assert_eq!(
        count(&summary, Outcome::Rescued),
        secrets.len(),
        "{summary:#?}"
    );

    let times = log.mutating_times();
    // Cancel, keep-label, remove AWSPENDING, tag: four per secret.
    assert_eq!(times.len(), 4 * secrets.len(), "{:?}", log.by_operation());
    let busiest = fleet::max_per_second(&times);
    let achieved = fleet::achieved_rate(&times).unwrap();
    println!(
        "{} mutating calls, busiest one-second window {busiest} (limit {limit}), achieved \
         {achieved:.1}/s at RESCUE_MAX_RATE={rate}",
        times.len()
    );
    assert!(
        busiest <= limit,
        "{busiest} mutating calls within one second; rate {rate} + burst {}",
        burst_for(rate)
    );
    assert!(
        achieved >= f64::from(rate.get()) / 2.0,
        "achieved only {achieved:.1} mutating calls per second of {rate}"
    );
}

/// The control for the test above: without the rate limiter the same window count goes past
/// rate plus burst, so the counting would catch a limiter that lets too much through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pacing_the_window_count_exceeds_rate_plus_burst() {
    let _turn = TURN.lock().await;
    let seeder = common::client();
    let prefix = common::unique_name("unpaced");
    let secrets = fleet::seed(&seeder, &prefix, &[(Kind::stuck("unpaced-rotator"), 30)]).await;

    let config = common::config(&[("RESCUE_ALARM_MIN_AGE", "0"), ("RESCUE_MAX_RATE", "20")]);
    let rate = config.max_rate;
    let limit = (rate.get() + burst_for(rate).get()) as usize;
    let log = CallLog::default();
    // Not `paced_app`: no rate limit on the API.
    let app = common::app(fleet::logged_client(&log), config);
    let summary = app
        .handle(
            &fleet::eventbridge_alarm_on("unpaced-rotator"),
            FUNCTION_ARN,
            Utc::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("the alarm's invocation fails: {e}"));
    assert_eq!(count(&summary, Outcome::Rescued), secrets.len());
    let busiest = fleet::max_per_second(&log.mutating_times());
    println!("unpaced: busiest one-second window {busiest} (paced limit {limit})");
    assert!(busiest > limit, "{busiest} <= {limit}");
}
