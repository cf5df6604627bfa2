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
