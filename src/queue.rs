//! The re-check queue: the one SQS call this function makes, `SendMessage` to its own queue.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use thiserror::Error;

use crate::recheck::RecheckMessage;

#[derive(Debug, Error)]
#[error("SendMessage to the re-check queue failed: {0}")]
pub struct QueueError(String);

#[derive(Debug, Clone)]
pub struct RecheckQueue {
    client: Client,
    url: String,
}

impl RecheckQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        RecheckQueue {
            client,
            url: url.into(),
        }
    }

    /// Sends `message` to be delivered after `delay` (whole seconds, at most 15 minutes).
    pub async fn send(&self, message: &RecheckMessage, delay: Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|err| QueueError(err.to_string()))?;
        let delay_seconds = i32::try_from(delay.as_secs()).unwrap_or(i32::MAX);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| {
                let code = err.code().unwrap_or("no code").to_owned();
                QueueError(format!("{code}: {}", DisplayErrorContext(&err)))
            })
    }
}
