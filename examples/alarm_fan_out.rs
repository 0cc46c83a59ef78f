//! Benchmark (`make bench`): one alarm on `db-rotator` over a 1,000-secret fleet on a local moto,
//! the same fleet as `tests/alarm_fan_out.rs`. Prints figures; asserts no timing.
//!
//! Starts its own moto on 127.0.0.1 (the tests' harness: moto ends with this process), seeds
//! the fleet, delivers `events/alarm-eventbridge.json` twice through `App::handle` with
//! `RESCUE_MAX_RATE=50` (the quota's ceiling) and `RESCUE_GRACE=0`, `RESCUE_ALARM_MIN_AGE=0`,
//! and counts every Secrets Manager call the function makes with an SDK interceptor.
//!
//! An example rather than a `cargo bench` target: a bench builds with the release profile
//! (fat LTO, one codegen unit), minutes on two cores, while the figures are set by moto and by
//! the rate limit, not by the Rust code.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet/mod.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::time::Instant;

use fleet::{CallLog, Kind};
use rotation_rescue::outcome::{Outcome, Summary};
use rotation_rescue::secrets::burst_for;

const MAX_RATE: &str = "50";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let moto_started = Instant::now();
    let endpoint = common::moto_endpoint();
    println!("moto: {endpoint} (ready in {:.1?})", moto_started.elapsed());

    let seeder = common::client();
    let prefix = common::unique_name("bench");
    let plan = fleet::thousand();
    let seeding = Instant::now();
    let secrets = fleet::seed(&seeder, &prefix, &plan).await;
    let seeded_in = seeding.elapsed();
    let stuck_alarmed = secrets
        .iter()
        .filter(|s| matches!(s.kind, Kind::Stuck { .. }) && fleet::alarmed(&s.kind))
        .count();
    println!(
        "fleet: {} secrets seeded in {seeded_in:.1?} ({} at a time); {stuck_alarmed} stuck on \
         db-rotator (plain, :live, :7), the rest stuck on api-rotator and db-rotator-v2, \
         healthy, without rotation, or scheduled for deletion",
        secrets.len(),
        fleet::SEED_CONCURRENCY
    );

    let config = common::config(&[("RESCUE_ALARM_MIN_AGE", "0"), ("RESCUE_MAX_RATE", MAX_RATE)]);
    let rate = config.max_rate;
    let log = CallLog::default();
    let app = fleet::paced_app(fleet::logged_client(&log), config);
    let alarm = fleet::event_file("alarm-eventbridge.json");
    println!(
        "settings: RESCUE_MAX_RATE={rate} (burst {}), RESCUE_GRACE=0, RESCUE_ALARM_MIN_AGE=0, \
         fan-out concurrency {}",
        burst_for(rate),
        rotation_rescue::handler::FAN_OUT_CONCURRENCY
    );

    for delivery in ["first delivery", "second delivery (same alarm)"] {
        log.clear();
        let started = Instant::now();
        let result = app
            .handle(&alarm, common::FUNCTION_ARN, chrono::Utc::now())
            .await;
        let wall = started.elapsed();
        println!();
        println!("== {delivery}");
        match result {
            Ok(summary) => report(&summary, &log, wall),
            Err(err) => println!("invocation failed: {err}"),
        }
    }
}

fn report(summary: &Summary, log: &CallLog, wall: std::time::Duration) {
    let counts: BTreeMap<&str, usize> = summary
        .counts
        .iter()
        .map(|(outcome, n)| (outcome.as_str(), *n))
        .collect();
    let rescued = summary.counts.get(&Outcome::Rescued).copied().unwrap_or(0);
    let calls = log.by_operation();
    let total = log.total();
    let times = log.mutating_times();
    let mutating = times.len();
    println!("wall time: {:.2} s", wall.as_secs_f64());
    println!("secrets reported: {} {counts:?}", summary.secrets.len());
    println!("secrets rescued: {rescued}");
    println!("calls by operation ({total} in all):");
    for (operation, n) in &calls {
        let mark = if fleet::MUTATING.contains(&operation.as_str()) {
            " (mutating)"
        } else {
            ""
        };
        println!("  {operation:<26} {n:>6}{mark}");
    }
    if rescued > 0 {
        println!(
            "calls per rescued secret: {:.2} in all, {:.2} mutating",
            total as f64 / rescued as f64,
            mutating as f64 / rescued as f64
        );
    } else {
        println!("calls per rescued secret: - (none rescued)");
    }
    match fleet::achieved_rate(&times) {
        Some(rate) => println!(
            "achieved mutating-call rate: {rate:.1}/s over {mutating} calls; busiest one-second \
             window: {} calls",
            fleet::max_per_second(&times)
        ),
        None => println!("achieved mutating-call rate: - ({mutating} mutating calls)"),
    }
}
