use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};

use crate::StoreError;

/// How to reach a CQL cluster (ScyllaDB or Apache Cassandra) and how to use it.
#[derive(Debug, Clone)]
pub struct CqlConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace holding Dora's tables: `[a-z0-9_]`, at most 48 characters.
    pub keyspace: String,
    /// Replication factor per datacenter (one datacenter per zone).
    pub replication: Vec<(String, u32)>,
    /// Consistency of reads and writes: QUORUM, or LOCAL_QUORUM across datacenters.
    pub consistency: Consistency,
    /// Consistency of compare-and-set on a zone's own rows and leases (SERIAL or LOCAL_SERIAL);
    /// cluster-wide rows always use SERIAL.
    pub serial: SerialConsistency,
    /// The datacenter of this process's zone: requests go to its nodes only, so that
    /// LOCAL_QUORUM and LOCAL_SERIAL mean the same datacenter for every writer of the zone.
    /// Required with `local_quorum`.
    pub datacenter: Option<String>,
    /// Client-side timeout of one request.
    pub request_timeout: Duration,
    /// Change-feed entries younger than this are not read yet, so that entries written by
    /// clients with slightly late clocks are not skipped.
    pub skew: Duration,
    /// How far behind a reader's cursor change-feed entries are still looked for: an entry
    /// that becomes visible later than the skew allowance (written by a client whose clock is
    /// further behind, replicated late from another datacenter, replayed from hints after an
    /// outage) is shown once if it lies within this of the cursor. Zero turns it off.
    pub lookback: Duration,
    /// How long change-feed entries are kept.
    pub changes_ttl: Duration,
    /// How long events are kept.
    pub events_ttl: Duration,
    /// How many previous specs are kept per resource.
    pub versions: usize,
    /// How many times an unreachable cluster is tried at start (with growing pauses, about
    /// 30 s in all for the default 8) before giving up.
    pub connect_attempts: usize,
    /// The most bytes of values in one conditional batch: compare-and-sets to one partition
    /// grouped into one Paxos round. Batches of one partition are exempt from
    /// `batch_size_fail_threshold`; this keeps each Paxos proposal small.
    pub batch_bytes: usize,
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "dora".into(),
            replication: vec![("datacenter1".into(), 1)],
            consistency: Consistency::Quorum,
            serial: SerialConsistency::Serial,
            datacenter: None,
            request_timeout: Duration::from_secs(10),
            skew: Duration::from_millis(250),
            lookback: Duration::from_secs(30),
            changes_ttl: Duration::from_secs(3600),
            events_ttl: Duration::from_secs(7 * 86_400),
            versions: 50,
            connect_attempts: 8,
            batch_bytes: 256 * 1024,
        }
    }
}

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::Unavailable(message.into())
}

fn identifier(what: &str, text: &str, extra: &str) -> Result<String, StoreError> {
    let ok = !text.is_empty()
        && text.len() <= 48
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(c))
        && !text.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(text.to_string())
    } else {
        Err(bad(format!(
            "invalid {what} {text:?}: use lowercase letters, digits and '_' (at most 48), not starting with a digit"
        )))
    }
}

/// The `lookback` option: `0` (off), or a duration (`500ms`, `30s`, `2m`) longer than the skew
/// allowance and shorter than the feed is kept.
fn lookback(value: &str, config: &CqlConfig) -> Result<Duration, StoreError> {
    let lookback = match value.strip_suffix("ms") {
        Some(millis) => millis.parse().ok().map(Duration::from_millis),
        None if value == "0" => Some(Duration::ZERO),
        None => dora_crds::Duration::parse(value).map(|d| d.0),
    }
    .ok_or_else(|| {
        bad(format!(
            "lookback takes a duration such as 30s, 500ms or 2m (0 turns it off), got {value:?}"
        ))
    })?;
    if !lookback.is_zero() && lookback <= config.skew {
        return Err(bad(format!(
            "lookback={value} is within the skew allowance ({:?}), where entries are read anyway; use a longer one, or 0 to turn it off",
            config.skew
        )));
    }
    if lookback >= config.changes_ttl {
        return Err(bad(format!(
            "lookback={value} reaches past the {:?} the change feed is kept; use a shorter one",
            config.changes_ttl
        )));
    }
    Ok(lookback)
}

impl CqlConfig {
    /// Parses `cql://HOST:PORT[,HOST:PORT...]/KEYSPACE[?replication=DC:RF[,DC:RF]&consistency=quorum|local_quorum&datacenter=DC&lookback=30s]`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("cql://")
            .ok_or_else(|| bad(format!("{url:?} is not a cql:// URL")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, keyspace) = location.split_once('/').unwrap_or((location, "dora"));
        let mut config = CqlConfig {
            nodes: hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains(':') {
                        h.to_string()
                    } else {
                        format!("{h}:9042")
                    }
                })
                .collect(),
            keyspace: identifier(
                "keyspace",
                if keyspace.is_empty() {
                    "dora"
                } else {
                    keyspace
                },
                "",
            )?,
            ..CqlConfig::default()
        };
        if config.nodes.is_empty() {
            return Err(bad(format!("{url:?} names no host")));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value in {pair:?}")))?;
            match key {
                "replication" => {
                    config.replication = value
                        .split(',')
                        .map(|entry| {
                            let (dc, rf) = entry.split_once(':').ok_or_else(|| {
                                bad(format!("replication takes DC:RF, got {entry:?}"))
                            })?;
                            let dc = identifier("datacenter", &dc.to_ascii_lowercase(), "-")
                                .map(|_| dc.to_string())?;
                            let rf = rf.parse().map_err(|_| {
                                bad(format!("replication factor must be a number, got {rf:?}"))
                            })?;
                            Ok((dc, rf))
                        })
                        .collect::<Result<_, StoreError>>()?;
                }
                "consistency" => {
                    (config.consistency, config.serial) = match value {
                        "quorum" => (Consistency::Quorum, SerialConsistency::Serial),
                        "local_quorum" => {
                            (Consistency::LocalQuorum, SerialConsistency::LocalSerial)
                        }
                        other => {
                            return Err(bad(format!(
                                "consistency must be quorum or local_quorum, got {other:?}"
                            )));
                        }
                    };
                }
                "datacenter" => {
                    identifier("datacenter", &value.to_ascii_lowercase(), "-")?;
                    config.datacenter = Some(value.to_string());
                }
                "lookback" => config.lookback = lookback(value, &config)?,
                other => {
                    return Err(bad(format!(
                        "unknown cql:// option {other:?}; known: replication, consistency, datacenter, lookback"
                    )));
                }
            }
        }
        if config.serial == SerialConsistency::LocalSerial && config.datacenter.is_none() {
            // Without it, two writers of a zone could reach coordinators in different
            // datacenters, and each win a LOCAL_SERIAL compare-and-set of its own.
            return Err(bad(
                "consistency=local_quorum needs datacenter=DC, the zone's own datacenter",
            ));
        }
        Ok(config)
    }

    /// A config for `keyspace` on the same cluster.
    pub fn with_keyspace(&self, keyspace: &str) -> Result<Self, StoreError> {
        Ok(CqlConfig {
            keyspace: identifier("keyspace", keyspace, "")?,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = CqlConfig::from_url("cql://127.0.0.1:9042,127.0.0.2/dora_a?replication=datacenter1:3&consistency=local_quorum&datacenter=datacenter1").unwrap();
        assert_eq!(c.nodes, ["127.0.0.1:9042", "127.0.0.2:9042"]);
        assert_eq!(c.keyspace, "dora_a");
        assert_eq!(c.replication, [("datacenter1".to_string(), 3)]);
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.datacenter.as_deref(), Some("datacenter1"));
        let unpinned = CqlConfig::from_url("cql://h/ks?consistency=local_quorum").unwrap_err();
        assert!(
            unpinned.to_string().contains("needs datacenter=DC"),
            "{unpinned}"
        );
        assert!(CqlConfig::from_url("cql://h/bad-name").is_err());
        assert!(CqlConfig::from_url("cql://h/ks'; DROP").is_err());
        assert!(CqlConfig::from_url("cql://h/ks?rf=3").is_err());
        assert_eq!(
            CqlConfig::from_url("cql://h/ks").unwrap().lookback,
            Duration::from_secs(30)
        );
        for (option, lookback) in [("2m", 120_000), ("1500ms", 1500), ("0", 0)] {
            let c = CqlConfig::from_url(&format!("cql://h/ks?lookback={option}")).unwrap();
            assert_eq!(c.lookback, Duration::from_millis(lookback), "{option}");
        }
        for (option, error) in [
            ("soon", "lookback takes a duration"),
            ("-1s", "lookback takes a duration"),
            ("100ms", "within the skew allowance"),
            ("2h", "reaches past"),
        ] {
            let e = CqlConfig::from_url(&format!("cql://h/ks?lookback={option}")).unwrap_err();
            assert!(e.to_string().contains(error), "{option}: {e}");
        }
        assert!(CqlConfig::from_url("sqlite:x").is_err());
    }
}
