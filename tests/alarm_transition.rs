//! Only a transition into ALARM acts: an alarm that already was in ALARM (previousState ALARM,
//! e.g. a Metrics Insights contributor change, or an operator's SetAlarmState) does nothing,
//! not even a ListSecrets.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use chrono::Utc;
use rotation_rescue::config::Config;
use rotation_rescue::handler::App;
use rotation_rescue::secrets::{self, SecretsApi};
use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<usize>>);

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "Calls"
    }
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }
}

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn alarm_to_alarm_is_not_a_transition_into_alarm_and_does_nothing() {
    let calls = Calls::default();
    let list = mock!(Client::list_secrets).then_http_response(|| {
        HttpResponse::new(
            StatusCode::try_from(200).unwrap(),
            SdkBody::from(json!({"SecretList": []}).to_string()),
        )
    });
    let client = mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        &[&list],
        |config| config
            .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1)))
            .retry_partition(RetryPartition::new("review-alarm-transition"))
            .timeout_config(secrets::timeouts())
            .interceptor(calls.clone())
    );
    let config = Config::from_lookup(|name| match name {
        "AWS_REGION" => Some("us-east-1".into()),
        "RESCUE_GRACE" | "RESCUE_ALARM_MIN_AGE" => Some("0".into()),
        _ => None,
    })
    .unwrap();
    let app = App::new(SecretsApi::new(client), config);

    let mut eventbridge = load("alarm-eventbridge.json");
    eventbridge["detail"]["previousState"]["value"] = json!("ALARM");
    let mut action = load("alarm-action.json");
    action["alarmData"]["previousState"]["value"] = json!("ALARM");

    for raw in [eventbridge, action] {
        let summary = app
            .handle(
                &raw,
                "arn:aws:lambda:us-east-1:123456789012:function:r",
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            summary.alarms[0].outcome, "nothing_to_do",
            "ALARM -> ALARM acted: {:#?}",
            summary.alarms
        );
    }
    assert_eq!(
        *calls.0.lock().unwrap(),
        0,
        "ListSecrets ran for ALARM -> ALARM"
    );
}
