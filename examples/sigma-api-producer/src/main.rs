//! A small command over the library, for trying the contract by hand and for edge-registrar's
//! own tests:
//!
//!     sigma-api-producer --redis redis://127.0.0.1:6379 register 1001 vps-jp-01 103.21.244.10 jp
//!     sigma-api-producer --redis redis://127.0.0.1:7000,redis://127.0.0.1:7001 --replicas 1 retire 1001
//!     sigma-api-producer --redis ... swap 1001:vps-jp-01:103.21.244.10:jp 1002:vps-jp-02:103.21.244.20:jp 103.21.244.99
//!
//! Each outcome is printed as one line of JSON. Exit 0 when every event took effect (applied,
//! deleted, unchanged), 3 when one was dead-lettered, 4 superseded, 6 when no outcome came in
//! time, 1 for anything else, 2 for a usage error: the codes of `edge-registrar publish --wait`.

use std::process::ExitCode;
use std::time::Duration;

use sigma_api_producer::{Connection, Event, Outcome, OutcomeKind, Producer, ProducerError, RetryPolicy, STREAM};

const USAGE: &str = "usage: sigma-api-producer --redis URL[,URL...] [--stream NAME] [--replicas N] [--outcome-timeout SECONDS]
  register VPS_ID NAME ADDRESS COUNTRY [KEY=VALUE...]
  retire VPS_ID [NAME]
  swap VPS_ID:NAME:ADDRESS:COUNTRY VPS_ID:NAME:ADDRESS:COUNTRY SPARE_ADDRESS";

fn usage(problem: &str) -> ExitCode {
    eprintln!("sigma-api-producer: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn register_of(spec: &str) -> Option<Event> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [vps_id, name, address, country] = parts.as_slice() else { return None };
    Some(Event::Register { vps_id: vps_id.to_string(), name: name.to_string(), address: address.to_string(), country: country.to_string(), labels: vec![] })
}

fn exit_for(outcomes: &[Outcome]) -> ExitCode {
    match outcomes.iter().map(|o| o.outcome).find(|kind| !kind.took_effect()) {
        None => ExitCode::SUCCESS,
        Some(OutcomeKind::DeadLettered) => ExitCode::from(3),
        Some(OutcomeKind::Superseded) => ExitCode::from(4),
        Some(_) => ExitCode::from(5),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let (mut urls, mut stream, mut policy) = (Vec::<String>::new(), STREAM.to_string(), RetryPolicy::default());
    while let Some(flag) = args.peek().filter(|a| a.starts_with("--")).cloned() {
        args.next();
        let Some(value) = args.next() else { return usage(&format!("{flag} needs a value")) };
        match flag.as_str() {
            "--redis" => urls = value.split(',').map(str::to_string).collect(),
            "--stream" => stream = value,
            "--replicas" => match value.parse() {
                Ok(n) => policy.replicas = n,
                Err(_) => return usage(&format!("--replicas {value:?} is not a number")),
            },
            "--outcome-timeout" => match value.parse() {
                Ok(seconds) => policy.outcome_wait = Duration::from_secs(seconds),
                Err(_) => return usage(&format!("--outcome-timeout {value:?} is not a number of seconds")),
            },
            _ => return usage(&format!("unknown flag {flag}")),
        }
    }
    if urls.is_empty() {
        return usage("--redis is required");
    }
    let rest: Vec<String> = args.collect();
    let connection = match Connection::open(&urls) {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("sigma-api-producer: cannot connect to {}: {error}", urls.join(","));
            return ExitCode::from(1);
        }
    };
    let mut producer = Producer::new(connection, &stream, policy);
    let result: Result<Vec<Outcome>, ProducerError> = match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["register", vps_id, name, address, country, labels @ ..] => {
            let labels = labels.iter().filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            producer.send(&Event::Register { vps_id: vps_id.to_string(), name: name.to_string(), address: address.to_string(), country: country.to_string(), labels }).map(|o| vec![o])
        }
        ["retire", vps_id] => producer.send(&Event::Retire { vps_id: vps_id.to_string(), name: None }).map(|o| vec![o]),
        ["retire", vps_id, name] => producer.send(&Event::Retire { vps_id: vps_id.to_string(), name: Some(name.to_string()) }).map(|o| vec![o]),
        ["swap", a, b, spare] => match (register_of(a), register_of(b)) {
            (Some(a), Some(b)) => producer.swap_addresses(&a, &b, spare),
            _ => return usage("swap takes VPS_ID:NAME:ADDRESS:COUNTRY twice"),
        },
        _ => return usage("expected register, retire or swap"),
    };
    match result {
        Ok(outcomes) => {
            for outcome in &outcomes {
                println!("{}", outcome.to_json());
            }
            exit_for(&outcomes)
        }
        Err(error @ ProducerError::NoOutcome { .. }) => {
            eprintln!("sigma-api-producer: {error}");
            ExitCode::from(6)
        }
        Err(error) => {
            eprintln!("sigma-api-producer: {error}");
            ExitCode::from(1)
        }
    }
}
