//! The Lambda binary: wiring only. The logic lives in the library.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use rotation_rescue::config::Config;
use rotation_rescue::handler::{self, App};
use rotation_rescue::queue::RecheckQueue;
use rotation_rescue::secrets::{self, SecretsApi};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Honours AWS_LAMBDA_LOG_FORMAT (JSON from the template) and AWS_LAMBDA_LOG_LEVEL.
    lambda_runtime::tracing::init_default_subscriber();

    // Fail the cold start, naming the variable, rather than mis-handle a rescue.
    let config = Config::from_env()?;
    let sdk_config = secrets::sdk_config_from_env().await;
    let api = SecretsApi::new(aws_sdk_secretsmanager::Client::new(&sdk_config))
        .with_rate_limit(config.max_rate);
    let queue = config.recheck_queue_url.as_ref().map(|url| {
        let sqs = aws_sdk_sqs::Client::new(&sdk_config);
        RecheckQueue::new(sqs, url)
    });
    let mut app = App::new(api, config);
    if let Some(queue) = queue {
        app = app.with_queue(queue);
    }
    let app = &app;

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now();
        let context = &event.context;
        let deadline = handler::deadline_from_context(context.deadline, now);
        app.handle_until(&event.payload, &context.invoked_function_arn, now, deadline)
            .await
            .map(|summary| summary.response())
    }))
    .await
}
