//! sigma-api's side of edge-registrar's event contract (docs/event-contract.md):
//! typed events and outcomes, publishing on one Redis server or a Redis Cluster, waiting for a
//! replica where there is one, and reading the event's own outcome back.
//!
//! The retry policy is the contract's:
//! - an `XADD` that failed or went unanswered is looked for on the stream by the event's own
//!   key (`producer_event_id`, a field the daemon ignores) before it is sent again, so an event
//!   whose reply was lost is never sent twice;
//! - an event counts as published once a replica has it (`WAIT`); one that a failover lost with
//!   its primary (gone from the stream) is sent again;
//! - outcomes `applied`, `deleted` and `unchanged` are done; `trimmed` is sent again (it never
//!   took effect); `dead-lettered` and `superseded` are returned, never retried: the first needs
//!   its cause fixed, the second means a newer event of the VPS took effect.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::cluster::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, FromRedisValue, RedisResult, cmd};

/// The stream sigma-api publishes to, and where edge-registrar's keys for it live.
pub const STREAM: &str = "sigma:vps-events";

/// A key in the stream's Redis Cluster hash slot: `{stream}:suffix` (the daemon's own rule).
pub fn in_stream_slot(stream: &str, suffix: &str) -> String {
    let tagged = stream.find('{').and_then(|open| stream[open + 1..].find('}').map(|len| len > 0)).unwrap_or(false);
    if tagged { format!("{stream}:{suffix}") } else { format!("{{{stream}}}:{suffix}") }
}

/// An event of the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Register { vps_id: String, name: String, address: String, country: String, labels: Vec<(String, String)> },
    Retire { vps_id: String, name: Option<String> },
}

impl Event {
    pub fn vps_id(&self) -> &str {
        match self {
            Event::Register { vps_id, .. } | Event::Retire { vps_id, .. } => vps_id,
        }
    }

    /// The stream entry's fields, as the contract lists them.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        match self {
            Event::Register { vps_id, name, address, country, labels } => {
                fields.push(("event".into(), "register".into()));
                fields.push(("vps_id".into(), vps_id.clone()));
                fields.push(("name".into(), name.clone()));
                fields.push(("address".into(), address.clone()));
                fields.push(("country".into(), country.clone()));
                if !labels.is_empty() {
                    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{}:{}", json_string(k), json_string(v))).collect();
                    fields.push(("labels".into(), format!("{{{}}}", pairs.join(","))));
                }
            }
            Event::Retire { vps_id, name } => {
                fields.push(("event".into(), "retire".into()));
                fields.push(("vps_id".into(), vps_id.clone()));
                if let Some(name) = name {
                    fields.push(("name".into(), name.clone()));
                }
            }
        }
        fields
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What became of an event (the outcome stream's `outcome` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Applied,
    Deleted,
    Unchanged,
    Superseded,
    DeadLettered,
    Trimmed,
}

impl OutcomeKind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "applied" => Self::Applied,
            "deleted" => Self::Deleted,
            "unchanged" => Self::Unchanged,
            "superseded" => Self::Superseded,
            "dead-lettered" => Self::DeadLettered,
            "trimmed" => Self::Trimmed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Deleted => "deleted",
            Self::Unchanged => "unchanged",
            Self::Superseded => "superseded",
            Self::DeadLettered => "dead-lettered",
            Self::Trimmed => "trimmed",
        }
    }

    /// The event did what it asked for, or there was nothing to do.
    pub fn took_effect(self) -> bool {
        matches!(self, Self::Applied | Self::Deleted | Self::Unchanged)
    }
}

/// One record of the outcome stream (docs/vps-event-outcome.schema.json).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The record's own id on the outcome stream.
    pub id: String,
    pub source_id: String,
    pub vps_id: Option<String>,
    pub event: Option<String>,
    pub outcome: OutcomeKind,
    pub name: Option<String>,
    pub rule: Option<String>,
    pub reason: Option<String>,
    /// For a dead letter: its id on `{stream}:dlq` (what `edge-registrar dlq replay` takes).
    pub dlq_id: Option<String>,
    pub at: String,
}

impl Outcome {
    fn from_fields(id: &str, fields: &HashMap<String, String>) -> Option<Self> {
        Some(Outcome {
            id: id.to_string(),
            source_id: fields.get("source_id")?.clone(),
            vps_id: fields.get("vps_id").cloned(),
            event: fields.get("event").cloned(),
            outcome: OutcomeKind::parse(fields.get("outcome")?)?,
            name: fields.get("name").cloned(),
            rule: fields.get("rule").cloned(),
            reason: fields.get("reason").cloned(),
            dlq_id: fields.get("dlq_id").cloned(),
            at: fields.get("at").cloned().unwrap_or_default(),
        })
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut parts = vec![
            format!("\"id\":{}", json_string(&self.id)),
            format!("\"source_id\":{}", json_string(&self.source_id)),
            format!("\"outcome\":{}", json_string(self.outcome.as_str())),
        ];
        for (key, value) in [("vps_id", &self.vps_id), ("event", &self.event), ("name", &self.name), ("rule", &self.rule), ("reason", &self.reason), ("dlq_id", &self.dlq_id)] {
            if let Some(value) = value {
                parts.push(format!("\"{key}\":{}", json_string(value)));
            }
        }
        parts.push(format!("\"at\":{}", json_string(&self.at)));
        format!("{{{}}}", parts.join(","))
    }
}

#[derive(Debug)]
pub enum ProducerError {
    Redis(redis::RedisError),
    /// No outcome within the wait: the event stays on the stream, and is applied when a daemon runs.
    NoOutcome { source_id: String, waited: Duration },
    /// Gave up after the retry policy's attempts.
    GaveUp(String),
}

impl fmt::Display for ProducerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(error) => write!(f, "redis: {error}"),
            Self::NoOutcome { source_id, waited } => write!(f, "no outcome for {source_id} within {} s", waited.as_secs()),
            Self::GaveUp(why) => write!(f, "gave up: {why}"),
        }
    }
}

impl std::error::Error for ProducerError {}

impl From<redis::RedisError> for ProducerError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error)
    }
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts at a failed or unanswered XADD.
    pub publish_attempts: u32,
    pub backoff: Duration,
    /// Replicas that must have the event (0: none are waited for, as on one server).
    pub replicas: u32,
    /// How long one WAIT waits.
    pub replica_wait: Duration,
    /// How long to wait for the outcome.
    pub outcome_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { publish_attempts: 20, backoff: Duration::from_millis(200), replicas: 0, replica_wait: Duration::from_millis(1_000), outcome_wait: Duration::from_secs(60) }
    }
}

/// A connection to one server or to a Redis Cluster.
pub enum Connection {
    Single(redis::Connection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// `redis://host:port` for one server; several for a cluster's seed nodes.
    pub fn open(urls: &[String]) -> RedisResult<Self> {
        if urls.len() == 1 {
            let client = redis::Client::open(urls[0].as_str())?;
            let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
            connection.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(Connection::Single(connection))
        } else {
            let client = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(10))
                .retries(10)
                .build()?;
            Ok(Connection::Cluster(client.get_connection()?))
        }
    }

    fn query<T: FromRedisValue>(&mut self, command: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(c) => command.query(c),
            Connection::Cluster(c) => command.query(c),
        }
    }

    /// WAIT on the connection that wrote `key` (WAIT counts that connection's writes): on a
    /// cluster, the primary serving the key's slot.
    fn wait_for_replicas(&mut self, key: &str, replicas: u32, wait: Duration) -> RedisResult<u32> {
        let mut command = cmd("WAIT");
        command.arg(replicas).arg(wait.as_millis() as u64);
        match self {
            Connection::Single(c) => command.query(c),
            Connection::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(Slot::for_key(key), SlotAddr::Master)));
                u32::from_redis_value(c.route_command(&command, route)?).map_err(redis::RedisError::from)
            }
        }
    }
}

type Entry = (String, Vec<String>);

fn field_map(flat: &[String]) -> HashMap<String, String> {
    flat.chunks(2).filter(|pair| pair.len() == 2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
}

/// A process-unique key for each event, so a publish whose reply was lost can be found.
fn event_key() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), nanos, SEQUENCE.fetch_add(1, Ordering::Relaxed))
}

pub struct Producer {
    connection: Connection,
    stream: String,
    outcomes: String,
    policy: RetryPolicy,
}

impl Producer {
    pub fn new(connection: Connection, stream: &str, policy: RetryPolicy) -> Self {
        Producer { connection, stream: stream.to_string(), outcomes: in_stream_slot(stream, "outcomes"), policy }
    }

    /// Where the outcome stream ends now: an event published after this has its outcome after it.
    fn outcome_stream_end(&mut self) -> RedisResult<String> {
        let last: Vec<Entry> = self.connection.query(cmd("XREVRANGE").arg(&self.outcomes).arg("+").arg("-").arg("COUNT").arg(1))?;
        Ok(last.into_iter().next().map(|(id, _)| id).unwrap_or_else(|| "0-0".into()))
    }

    /// The id of the entry with this `producer_event_id` among the stream's newest, if any.
    fn find_published(&mut self, key: &str) -> RedisResult<Option<String>> {
        let recent: Vec<Entry> = self.connection.query(cmd("XREVRANGE").arg(&self.stream).arg("+").arg("-").arg("COUNT").arg(1_000))?;
        Ok(recent.into_iter().find(|(_, fields)| field_map(fields).get("producer_event_id").map(String::as_str) == Some(key)).map(|(id, _)| id))
    }

    /// XADD: the event's stream id.
    fn add(&mut self, fields: &[(String, String)]) -> RedisResult<String> {
        self.connection.query(cmd("XADD").arg(&self.stream).arg("*").arg(fields))
    }

    fn exists(&mut self, id: &str) -> RedisResult<bool> {
        let found: Vec<Entry> = self.connection.query(cmd("XRANGE").arg(&self.stream).arg(id).arg(id))?;
        Ok(!found.is_empty())
    }

    /// Adds the event once, and, with replicas, until a replica has it. Returns its stream id.
    pub fn publish(&mut self, event: &Event) -> Result<String, ProducerError> {
        let key = event_key();
        let mut fields = event.fields();
        fields.push(("producer_event_id".into(), key.clone()));
        let mut last_error = String::new();
        for attempt in 0..self.policy.publish_attempts {
            if attempt > 0 {
                sleep(self.policy.backoff);
            }
            // Sent before, reply lost? Then it is there already: never add it twice.
            let id = match if attempt > 0 { self.find_published(&key) } else { Ok(None) } {
                Ok(Some(id)) => id,
                Ok(None) => match self.add(&fields) {
                    Ok(id) => id,
                    Err(error) => {
                        last_error = error.to_string();
                        continue;
                    }
                },
                Err(error) => {
                    last_error = error.to_string();
                    continue;
                }
            };
            if self.policy.replicas == 0 {
                return Ok(id);
            }
            for _ in 0..10 {
                match self.connection.wait_for_replicas(&self.stream, self.policy.replicas, self.policy.replica_wait) {
                    Ok(n) if n >= self.policy.replicas => return Ok(id),
                    Ok(_) => {}
                    Err(error) => last_error = error.to_string(),
                }
                // Not replicated yet: still there (wait again), or lost with a failed primary (send again).
                match self.exists(&id) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        last_error = error.to_string();
                        break;
                    }
                }
            }
        }
        Err(ProducerError::GaveUp(format!("{} attempts to publish {} event of VPS {}; last error: {last_error}", self.policy.publish_attempts, fields[0].1, event.vps_id())))
    }

    /// The outcome of `source_id`, read from the records after `after`.
    pub fn await_outcome(&mut self, source_id: &str, after: &str) -> Result<Outcome, ProducerError> {
        let started = Instant::now();
        let mut cursor = after.to_string();
        while started.elapsed() < self.policy.outcome_wait {
            let reply: Option<Vec<(String, Vec<Entry>)>> = self.connection.query(cmd("XREAD").arg("COUNT").arg(500).arg("BLOCK").arg(1_000).arg("STREAMS").arg(&self.outcomes).arg(&cursor))?;
            for (_, entries) in reply.unwrap_or_default() {
                for (id, flat) in entries {
                    cursor = id.clone();
                    let fields = field_map(&flat);
                    if fields.get("source_id").map(String::as_str) == Some(source_id) {
                        if let Some(outcome) = Outcome::from_fields(&id, &fields) {
                            return Ok(outcome);
                        }
                    }
                }
            }
        }
        Err(ProducerError::NoOutcome { source_id: source_id.to_string(), waited: self.policy.outcome_wait })
    }

    /// Publishes the event and returns its outcome; an event trimmed before it was applied is
    /// sent again (it never took effect), anything else is the caller's to act on.
    pub fn send(&mut self, event: &Event) -> Result<Outcome, ProducerError> {
        for _ in 0..3 {
            let after = self.outcome_stream_end()?;
            let id = self.publish(event)?;
            let outcome = self.await_outcome(&id, &after)?;
            if outcome.outcome != OutcomeKind::Trimmed {
                return Ok(outcome);
            }
        }
        Err(ProducerError::GaveUp(format!("event of VPS {} trimmed from the stream 3 times before it was applied", event.vps_id())))
    }

    /// Swaps the addresses of two registered VPSs. An address changes hands in stream order and
    /// a claim of an address another VPS still holds is refused, so the swap goes through a
    /// free address: `a` moves to `spare`, `b` to `a`'s old address, `a` to `b`'s. Returns the
    /// three outcomes; it stops at the first that did not take effect.
    pub fn swap_addresses(&mut self, a: &Event, b: &Event, spare: &str) -> Result<Vec<Outcome>, ProducerError> {
        let (Event::Register { address: address_a, .. }, Event::Register { address: address_b, .. }) = (a, b) else {
            return Err(ProducerError::GaveUp("swap_addresses takes the two VPSs' current register events".into()));
        };
        let moved = |event: &Event, address: &str| match event {
            Event::Register { vps_id, name, country, labels, .. } => Event::Register { vps_id: vps_id.clone(), name: name.clone(), address: address.to_string(), country: country.clone(), labels: labels.clone() },
            retire => retire.clone(),
        };
        let mut outcomes = Vec::new();
        for step in [moved(a, spare), moved(b, address_a), moved(a, address_b)] {
            let outcome = self.send(&step)?;
            let done = outcome.outcome.took_effect();
            outcomes.push(outcome);
            if !done {
                break;
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_stream_slot() {
        assert_eq!(in_stream_slot("sigma:vps-events", "outcomes"), "{sigma:vps-events}:outcomes");
        assert_eq!(in_stream_slot("{sigma}:vps-events", "outcomes"), "{sigma}:vps-events:outcomes");
        assert_eq!(Slot::for_key("sigma:vps-events"), Slot::for_key("{sigma:vps-events}:outcomes"));
    }

    #[test]
    fn fields_follow_the_contract() {
        let event = Event::Register { vps_id: "1001".into(), name: "vps-jp-01".into(), address: "103.21.244.77".into(), country: "jp".into(), labels: vec![("provider".into(), "vultr".into())] };
        let fields = event.fields();
        assert_eq!(fields.last(), Some(&("labels".to_string(), "{\"provider\":\"vultr\"}".to_string())));
        assert_eq!(Event::Retire { vps_id: "1001".into(), name: None }.fields(), vec![("event".to_string(), "retire".to_string()), ("vps_id".to_string(), "1001".to_string())]);
    }
}
