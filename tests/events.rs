//! Every file in `events/` goes through the production dispatcher, and the trigger and fields it
//! yields are asserted. A new file without an expectation here fails the suite.

use std::path::Path;

use rotation_rescue::alarm::{Alarm, Delivery};
use rotation_rescue::event::{self, FailedStep, OperatorRequest, Trigger};
use serde_json::Value;

const PROD_DB: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
const ALARM_ARN_PREFIX: &str = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:";

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn rotation_failed(name: &str) -> event::RotationFailed {
    match event::parse(&load(name)) {
        Ok(Trigger::RotationFailed(failed)) => failed,
        other => panic!("{name}: expected RotationFailed, got {other:?}"),
    }
}

/// The one alarm a file delivers, through the production dispatcher.
fn alarm(name: &str) -> Alarm {
    match event::parse(&load(name)) {
        Ok(Trigger::Alarm(mut alarms)) if alarms.len() == 1 => alarms.remove(0),
        other => panic!("{name}: expected one alarm, got {other:?}"),
    }
}

/// The alarm `alarm_name` in us-east-1 of account 123456789012, as `delivery` brings it.
fn expected(
    delivery: Delivery,
    alarm_name: &str,
    state: &str,
    functions: &[&str],
    composite: bool,
) -> Alarm {
    Alarm {
        delivery,
        name: alarm_name.to_owned(),
        arn: Some(format!("{ALARM_ARN_PREFIX}{alarm_name}")),
        state: state.to_owned(),
        // Every events file is a transition: OK -> ALARM, or ALARM -> OK.
        previous_state: Some(if state == "ALARM" { "OK" } else { "ALARM" }.to_owned()),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        composite,
    }
}

fn check(name: &str) {
    match name {
        "rotation-failed.json" => {
            let failed = rotation_failed(name);
            assert_eq!(failed.secret_id, PROD_DB);
            assert_eq!(failed.step, FailedStep::CreateSecret);
            assert_eq!(failed.failed_at.to_rfc3339(), "2024-05-01T00:50:20+00:00");
            assert_eq!(
                failed.event_id.as_deref(),
                Some("e3b69cfe-b70e-4c94-baa9-9decc3c150b9")
            );
        }
        "rotation-failed-test-secret.json" => {
            let failed = rotation_failed(name);
            assert_eq!(failed.secret_id, PROD_DB);
            assert_eq!(failed.step, FailedStep::TestSecret);
        }
        "rotation-failed-not-created-by-lambda.json" => {
            let failed = rotation_failed(name);
            assert_eq!(failed.secret_id, PROD_DB);
            assert_eq!(failed.step, FailedStep::Unknown);
        }
        "rotation-succeeded.json" => match event::parse(&load(name)) {
            Ok(Trigger::OtherServiceEvent {
                event_name,
                secret_id,
            }) => {
                assert_eq!(event_name, "RotationSucceeded");
                assert_eq!(secret_id.as_deref(), Some(PROD_DB));
            }
            other => panic!("{name}: expected another service event, got {other:?}"),
        },
        "operator.json" => assert_eq!(
            event::parse(&load(name)),
            Ok(Trigger::Operator(OperatorRequest {
                secrets: vec!["prod/db".into()],
                dry_run: false,
                force: false,
            }))
        ),
        "operator-dry-run.json" => assert_eq!(
            event::parse(&load(name)),
            Ok(Trigger::Operator(OperatorRequest {
                secrets: vec![
                    "prod/db".into(),
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-key-XyZ123"
                        .into(),
                ],
                dry_run: true,
                force: false,
            }))
        ),
        "recheck-sqs.json" => match event::parse(&load(name)) {
            Ok(Trigger::Recheck(records)) => {
                assert_eq!(records.len(), 1);
                let record = &records[0];
                assert_eq!(record.message_id, "5fd6e1a2-7c5b-4c36-9c4e-0d1f5a3b2e71");
                let recheck = record.message.as_ref().expect("a re-check message");
                assert_eq!(recheck.secret_arn, PROD_DB);
                assert_eq!(recheck.version_id, "3f1c9a7e-1111-2222-3333-444455556666");
                assert_eq!(recheck.failed_step, FailedStep::TestSecret);
                assert_eq!(
                    recheck.first_deferred_at.to_rfc3339(),
                    "2024-05-01T00:50:21+00:00"
                );
            }
            other => panic!("{name}: expected a re-check batch, got {other:?}"),
        },
        "alarm-eventbridge.json" => {
            let alarm = alarm(name);
            let want = expected(
                Delivery::EventBridge,
                "db-rotator-errors",
                "ALARM",
                &["db-rotator"],
                false,
            );
            assert_eq!(alarm, want);
            assert!(alarm.is_transition_into_alarm());
            assert_eq!(
                alarm.region_and_account(),
                Some(("us-east-1", "123456789012"))
            );
            // `reasonData` is a JSON string inside the JSON, as AWS sends it.
            let raw = load(name);
            let reason_data = raw["detail"]["state"]["reasonData"].as_str().unwrap();
            let reason: Value = serde_json::from_str(reason_data).unwrap();
            assert_eq!(reason["statistic"], "Sum");
        }
        "alarm-eventbridge-metric-math.json" => assert_eq!(
            alarm(name),
            // The expression entry has no metricStat and adds no function.
            expected(
                Delivery::EventBridge,
                "rotators-errors-math",
                "ALARM",
                &["db-rotator", "api-rotator"],
                false,
            )
        ),
        "alarm-action.json" => assert_eq!(
            alarm(name),
            expected(
                Delivery::AlarmAction,
                "db-rotator-errors-action",
                "ALARM",
                &["db-rotator"],
                false,
            )
        ),
        "alarm-action-composite.json" => assert_eq!(
            alarm(name),
            expected(Delivery::AlarmAction, "rotation-health", "ALARM", &[], true)
        ),
        "alarm-sns.json" => {
            let alarm = alarm(name);
            assert_eq!(
                alarm,
                expected(
                    Delivery::Sns,
                    "db-rotator-errors-sns",
                    "ALARM",
                    &["db-rotator"],
                    false,
                )
            );
            // The region comes from the ARN, never from the display name.
            assert_eq!(
                alarm.region_and_account(),
                Some(("us-east-1", "123456789012"))
            );
            let raw = load(name);
            let message = raw["Records"][0]["Sns"]["Message"].as_str().unwrap();
            let message: Value = serde_json::from_str(message).unwrap();
            assert_eq!(message["AlarmDescription"], Value::Null);
            assert_eq!(message["Region"], "US East (N. Virginia)");
        }
        "alarm-sns-metric-math.json" => assert_eq!(
            alarm(name),
            expected(
                Delivery::Sns,
                "rotators-errors-math-sns",
                "ALARM",
                &["db-rotator", "api-rotator"],
                false,
            )
        ),
        "alarm-ok.json" => {
            let alarm = alarm(name);
            assert_eq!(
                alarm,
                expected(
                    Delivery::EventBridge,
                    "db-rotator-errors",
                    "OK",
                    &["db-rotator"],
                    false,
                )
            );
            assert!(!alarm.is_transition_into_alarm());
        }
        other => panic!("events/{other} has no expectation in tests/events.rs"),
    }
}

#[test]
fn every_events_file_is_recognised_with_its_fields() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("events/ exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 14, "events/ holds {names:?}");
    for name in &names {
        check(name);
    }
}
