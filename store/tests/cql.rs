//! The conformance suite on a real Apache Cassandra (or ScyllaDB), each test in a fresh
//! keyspace. `scripts/test` starts Cassandra and sets `DORA_CQL_URL`; under `CI=true` a missing
//! cluster fails these tests.

use dora_store::cql::{CqlConfig, CqlStore};

async fn fresh() -> Box<CqlStore> {
    let url = match std::env::var("DORA_CQL_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
        }
        Err(_) => "cql://127.0.0.1:9042/dora".into(),
    };
    let keyspace = format!(
        "conformance_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let config = CqlConfig::from_url(&url)
        .unwrap()
        .with_keyspace(&keyspace)
        .unwrap();
    Box::new(
        CqlStore::connect(config)
            .await
            .expect("a CQL cluster: run `scripts/cassandra start`"),
    )
}

async fn drop_keyspace(store: Box<CqlStore>) {
    store
        .drop_keyspace()
        .await
        .expect("the test keyspace drops");
}

dora_store::conformance_tests!(fresh(), drop_keyspace);

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error_after_retries() {
    let config = CqlConfig {
        nodes: vec!["127.0.0.1:1".into()],
        connect_attempts: 2,
        ..CqlConfig::default()
    };
    let started = std::time::Instant::now();
    let error = CqlStore::connect(config)
        .await
        .err()
        .expect("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach the CQL cluster at 127.0.0.1:1"),
        "{message}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "it retried with a pause first"
    );
}
