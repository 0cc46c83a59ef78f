//! The built Lambda binary, driven through cargo-lambda's local runtime emulator end to end:
//! `cargo lambda watch` serves the Lambda runtime API on 127.0.0.1, the binary
//! `rotation-rescue-lambda` polls it with its environment pointed at this binary's moto, and
//! `cargo lambda invoke` sends the payload and prints the function's answer.
//!
//! The default tests run `watch --only-lambda-apis` and start the very binary that `cargo test`
//! built (`CARGO_BIN_EXE_rotation-rescue-lambda`), so nothing is rebuilt. One ignored test lets
//! cargo-lambda start the function itself (`cargo run`), which rebuilds it without the
//! dev-dependency features: about two minutes more on two cores.
//!
//! cargo-lambda hands the function placeholder context values (the function ARN `function-arn`,
//! a deadline in 1970): the account comes from `RESCUE_ACCOUNT_ID`.
//!
//! Every process started here runs under the watchdog of `common` in a process group of its own,
//! and is killed as a group when its guard drops, panics included.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::Value;

const FUNCTION: &str = "rotation-rescue-lambda";
const WATCH_READY: Duration = Duration::from_secs(60);
/// One invocation against an already built function.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);
/// One invocation that first has cargo build the function.
const BUILD_INVOKE_TIMEOUT: Duration = Duration::from_secs(900);

/// The path of `cargo-lambda`: `CARGO_LAMBDA`, else the project venv's.
fn cargo_lambda_path() -> PathBuf {
    let path = match std::env::var_os("CARGO_LAMBDA") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/cargo-lambda"),
    };
    assert!(
        path.is_file(),
        "cargo-lambda not found at {}: run `make venv` (or `make test`) to install the Python \
         tools into .venv, or set CARGO_LAMBDA to a cargo-lambda binary (PyPI cargo-lambda 1.9.2)",
        path.display()
    );
    path
}

/// A directory of this test's files (payloads, logs) under `target/test-logs/`.
fn work_dir(test: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = log_dir().join(format!("runtime-{}-{test}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test's work dir");
    dir
}

/// The environment of the function: this binary's moto, dummy credentials, the account, and
/// nothing from the developer's own AWS setup.
fn function_env(command: &mut Command, dir: &Path) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("AWS_") || key.starts_with("RESCUE_") {
            command.env_remove(key);
        }
    }
    let missing = dir.join("no-such-aws-file");
    command
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", &missing)
        .env("AWS_SHARED_CREDENTIALS_FILE", &missing)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RESCUE_ACCOUNT_ID", ACCOUNT)
        .env("RESCUE_GRACE", "0")
        .env("RESCUE_ALARM_MIN_AGE", "0")
        .env("AWS_LAMBDA_LOG_LEVEL", "info");
}

/// `cargo lambda watch` on 127.0.0.1 and a free port, plus (in `only_lambda_apis` mode) the
/// function binary polling it. Both are killed when this drops.
struct Emulator {
    port: u16,
    dir: PathBuf,
    /// Dropped first: the function before the emulator it polls.
    function: Option<GroupGuard>,
    _watch: GroupGuard,
}

impl Emulator {
    /// Serves only the runtime APIs and starts the binary that `cargo test` built.
    fn with_built_binary(test: &str) -> Emulator {
        let mut emulator = Emulator::watch(test, &["--only-lambda-apis"], |_| {});
        let binary = env!("CARGO_BIN_EXE_rotation-rescue-lambda");
        let log = std::fs::File::create(emulator.dir.join("function.log")).unwrap();
        let mut command = watched_command(binary);
        function_env(&mut command, &emulator.dir);
        let runtime_api = format!("http://127.0.0.1:{}/.rt/{FUNCTION}", emulator.port);
        command
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().expect("start the function binary");
        emulator.function = Some(GroupGuard {
            child,
            name: FUNCTION,
        });
        emulator
    }

    /// Lets cargo-lambda build and start the function itself (`cargo run`), with the
    /// environment pointed at moto.
    fn starting_the_function(test: &str) -> Emulator {
        Emulator::watch(test, &["--ignore-changes", "--bin", FUNCTION], |command| {
            let dir = log_dir();
            function_env(command, &dir);
        })
    }

    fn watch(test: &str, args: &[&str], env: impl Fn(&mut Command)) -> Emulator {
        let cargo_lambda = cargo_lambda_path();
        let dir = work_dir(test);
        let log_path = dir.join("watch.log");
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = watched_command(&cargo_lambda);
            command
                .args([
                    "lambda",
                    "watch",
                    "-A",
                    "127.0.0.1",
                    "-P",
                    &port.to_string(),
                ])
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("CARGO_LAMBDA_COLOR", "never")
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            env(&mut command);
            let child = command.spawn().expect("start cargo lambda watch");
            let mut watch = GroupGuard {
                child,
                name: "cargo lambda watch",
            };
            if wait_for_port(port, &mut watch.child, WATCH_READY) {
                return Emulator {
                    port,
                    dir,
                    function: None,
                    _watch: watch,
                };
            }
            // The guard kills it; try another port.
        }
        panic!(
            "cargo lambda watch did not listen; its log:\n{}",
            tail(&log_path, 30)
        );
    }

    /// `cargo lambda invoke` with `payload` in a file; the printed answer on success, the error
    /// output otherwise.
    async fn invoke(&self, payload: &Value, timeout: Duration) -> Result<Value, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let file = self.dir.join(format!(
            "payload-{}.json",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, serde_json::to_vec_pretty(payload).unwrap()).unwrap();
        let mut command = tokio::process::Command::new(cargo_lambda_path());
        command
            .args(["lambda", "invoke", FUNCTION, "-A", "127.0.0.1"])
            .args(["-P", &self.port.to_string(), "--data-file"])
            .arg(&file)
            .env("CARGO_LAMBDA_COLOR", "never")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(timeout, command.output()).await {
            Ok(output) => output.expect("run cargo lambda invoke"),
            Err(_) => panic!(
                "cargo lambda invoke did not answer within {timeout:?}\nwatch log:\n{}\n\
                 function log:\n{}",
                tail(&self.dir.join("watch.log"), 30),
                tail(&self.dir.join("function.log"), 30)
            ),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!("{stdout}\n{stderr}"));
        }
        serde_json::from_str(stdout.trim()).map_err(|err| {
            format!(
                "not JSON ({err}): {stdout}\n{stderr}\nfunction log:\n{}",
                self.logs()
            )
        })
    }

    fn logs(&self) -> String {
        format!(
            "watch:\n{}\nfunction:\n{}",
            tail(&self.dir.join("watch.log"), 30),
            tail(&self.dir.join("function.log"), 30)
        )
    }
}

fn only_secret(summary: &Value) -> &Value {
    let secrets = summary["secrets"].as_array().expect("secrets array");
    assert_eq!(secrets.len(), 1, "{summary:#}");
    &secrets[0]
}

/// Asserts what a rescue of `seeded` leaves in moto.
async fn assert_rescued(seeded: &Seeded, keep_label: &str) {
    let after = state(&client(), &seeded.arn).await;
    assert_eq!(
        after.labels_of(seeded.pending()),
        vec![keep_label],
        "{after:#?}"
    );
    assert!(after.holders(PENDING).is_empty(), "{after:#?}");
    assert_eq!(after.labels_of(&seeded.current), vec![CURRENT]);
    assert_eq!(after.rotation_enabled, Some(false));
    let tags = after.rescue_tags();
    assert_eq!(
        tags.get("rotation-rescue:kept-version"),
        Some(&seeded.pending())
    );
    assert_eq!(tags.get("rotation-rescue:keep-label"), Some(&keep_label));
}

#[tokio::test]
async fn rotation_failed_event_through_cargo_lambda_rescues_the_secret() {
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("runtime-event")).await;
    let emulator = Emulator::with_built_binary("event");

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = emulator.invoke(&event, INVOKE_TIMEOUT).await.unwrap();

    assert_eq!(summary["trigger"], "rotation_failed", "{summary:#}");
    assert_eq!(summary["dry_run"], false);
    assert_eq!(summary["counts"], serde_json::json!({"rescued": 1}));
    let report = only_secret(&summary);
    assert_eq!(report["secret_arn"], seeded.arn.as_str());
    assert_eq!(report["outcome"], "rescued");
    assert_eq!(report["failed_step"], "setSecret");
    assert_eq!(report["stuck_version_id"], seeded.pending());
    let keep_label = report["keep_label"].as_str().expect("keep_label");
    assert_keep_label(keep_label, "RESCUED", since, Utc::now());
    let actions: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "cancel_rotation",
            "attach_label",
            "remove_pending",
            "tag_secret"
        ]
    );
    assert!(report["live_credential_note"].is_string(), "{report:#}");
    assert_rescued(&seeded, keep_label).await;

    // The same event again: nothing to do, no error.
    let again = emulator.invoke(&event, INVOKE_TIMEOUT).await.unwrap();
    assert_eq!(only_secret(&again)["outcome"], "nothing_to_do", "{again:#}");
    assert_rescued(&seeded, keep_label).await;
}

#[tokio::test]
async fn operator_payload_through_cargo_lambda_returns_the_summary() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("runtime-operator")).await;
    let before = state(&client, &seeded.arn).await;
    let missing = unique_name("runtime-missing");
    let emulator = Emulator::with_built_binary("operator");

    let dry_run = operator_request(&[&seeded.name, &missing], true);
    let planned = emulator.invoke(&dry_run, INVOKE_TIMEOUT).await.unwrap();

    assert_eq!(planned["trigger"], "operator", "{planned:#}");
    assert_eq!(planned["dry_run"], true);
    let outcomes: Vec<(&str, &str)> = planned["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let outcome = r["outcome"].as_str().unwrap();
            (r["secret_arn"].as_str().unwrap(), outcome)
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (seeded.arn.as_str(), "planned"),
            (missing.as_str(), "skipped")
        ]
    );
    assert_eq!(
        state(&client, &seeded.arn).await,
        before,
        "dry run changed nothing"
    );

    let request = operator_request(&[&seeded.arn], false);
    let rescued = emulator.invoke(&request, INVOKE_TIMEOUT).await.unwrap();
    let report = only_secret(&rescued);
    assert_eq!(report["outcome"], "rescued", "{rescued:#}");
    assert_rescued(&seeded, report["keep_label"].as_str().expect("keep_label")).await;
}

#[tokio::test]
async fn unrecognized_payload_through_cargo_lambda_is_an_invalid_event_error() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("runtime-invalid")).await;
    let before = state(&client, &seeded.arn).await;
    let emulator = Emulator::with_built_binary("invalid");

    let payload = serde_json::json!({"SecretId": seeded.arn});
    let err = emulator.invoke(&payload, INVOKE_TIMEOUT).await.unwrap_err();

    assert!(err.contains("InvalidEvent"), "{err}\n{}", emulator.logs());
    assert!(err.contains("unrecognized payload"), "{err}");
    assert_eq!(state(&client, &seeded.arn).await, before);
}

#[tokio::test]
#[ignore = "slow: cargo-lambda rebuilds the binary without dev-dependency features (~2 min on 2 \
            cores); run with `cargo test --test runtime_emulator -- --ignored`"]
async fn cargo_lambda_watch_builds_and_starts_the_function_itself() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("runtime-watch")).await;
    let emulator = Emulator::starting_the_function("watch");

    // The first invocation has cargo build and start the function; a dry run changes nothing.
    let dry_run = operator_request(&[&seeded.arn], true);
    let planned = emulator
        .invoke(&dry_run, BUILD_INVOKE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(only_secret(&planned)["outcome"], "planned", "{planned:#}");

    // The event's time is taken now that the function runs: on moto the stuck version always
    // looks created at the time of the describe call (see `State` in common).
    let event = rotation_failed_event(&seeded.arn, "testSecret", failure_now());
    let summary = emulator.invoke(&event, INVOKE_TIMEOUT).await.unwrap();
    let report = only_secret(&summary);
    assert_eq!(report["outcome"], "rescued", "{summary:#}");
    assert_rescued(&seeded, report["keep_label"].as_str().expect("keep_label")).await;
}
