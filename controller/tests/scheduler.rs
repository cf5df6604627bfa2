//! The scheduler and the credit system against hollow nodes, on SQLite and on Cassandra.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Backend, Zone, assert_no_double_booking, eventually, workload};
use dora_crds::Kind;
use dora_crds::status::{ContainerState, CreditAccount, WorkloadStatus};
use dora_store::{ObjectKey, Precondition, SpecWrite};

const WAIT: Duration = Duration::from_secs(30);

async fn gpu_workloads_land_only_where_model_and_count_fit(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("a100-", 2, "4xA100");
    zone.sim("h100-", 2, "2xH100");
    zone.scheduler(zone.scheduler_config("s1"));
    let gpu = |model: &str, count: u32| {
        format!(
            "  config: {{cmd: sleep 1000}}\n  selectors:\n    gpu: {{product_name: {model}, count: {count}}}\n"
        )
    };
    zone.apply("alice", &workload("h", 3, &gpu("H100", 2)))
        .await;
    zone.apply("alice", &workload("a", 3, &gpu("[A100, V100]", 3)))
        .await;
    let placed = eventually("two H100 replicas running", WAIT, || async {
        let h = zone.containers("h").await;
        (h.iter().filter(|c| c.running()).count() == 2).then_some(h)
    })
    .await;
    for c in &placed {
        if let Some(node) = c.node() {
            assert!(node.starts_with("h100-"), "{} landed on {node}", c.name);
            assert_eq!(c.placement.gpus, vec![0, 1]);
            assert_eq!(c.placement.gpu_product.as_deref(), Some("H100"));
        }
    }
    let a = eventually("two A100 replicas running", WAIT, || async {
        let a = zone.containers("a").await;
        (a.iter().filter(|c| c.running()).count() == 2).then_some(a)
    })
    .await;
    assert!(
        a.iter()
            .filter_map(|c| c.node())
            .all(|n| n.starts_with("a100-"))
    );
    // The third replica of each waits, with the reason in the status and an event.
    let status = eventually("a pending reason", WAIT, || async {
        let row = zone.workload("h").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        (status.reason.is_some() && status.pending == 1).then_some(status)
    })
    .await;
    assert!(
        status.reason.unwrap().contains("nodes fit"),
        "the reason names the misfits"
    );
    assert!(!zone.events("FailedScheduling").await.is_empty());
    let mut all = zone.containers("h").await;
    all.extend(zone.containers("a").await);
    assert_no_double_booking(&all);
    zone.finish().await;
}

async fn a_blocked_workload_holds_back_later_ones_except_backfill(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 1, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = |gpus: u32, limit: &str| {
        format!(
            "  config: {{cmd: sleep 1000{limit}}}\n  selectors:\n    gpu: {{product_name: A100, count: {gpus}}}\n"
        )
    };
    zone.apply("alice", &workload("first", 1, &spec(1, ", maxRunTime: 4s")))
        .await;
    eventually("first running", WAIT, || async {
        zone.containers("first")
            .await
            .iter()
            .any(|c| c.running())
            .then_some(())
    })
    .await;
    zone.apply("alice", &workload("head", 1, &spec(2, "")))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    zone.apply("alice", &workload("long", 1, &spec(1, "")))
        .await;
    zone.apply("alice", &workload("short", 1, &spec(1, ", maxRunTime: 1s")))
        .await;
    // `short` ends before `first` frees its GPU, so it cannot delay `head`: it backfills.
    eventually("short backfilled", WAIT, || async {
        zone.containers("short")
            .await
            .iter()
            .any(|c| c.running())
            .then_some(())
    })
    .await;
    let status = eventually("long waits behind head", WAIT, || async {
        let row = zone.workload("long").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        status.reason.filter(|r| r.contains("waiting behind head"))
    })
    .await;
    assert!(!status.is_empty());
    // `first` is stopped at its maxRunTime, `short` too; then `head` gets both GPUs.
    eventually("head running on both GPUs", WAIT, || async {
        let c = zone.containers("head").await;
        c.iter()
            .find(|c| c.running())
            .map(|c| c.placement.gpus.len())
    })
    .await;
    assert!(!zone.events("MaxRunTime").await.is_empty());
    assert!(zone.containers("long").await.iter().all(|c| !c.running()));
    zone.finish().await;
}

async fn distribute_spreads_and_fill_packs(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 4, "4xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    zone.nodes_ready(4).await;
    let spec = |affinity: &str| {
        format!(
            "  config: {{cmd: sleep 1000, affinity: {affinity}}}\n  selectors:\n    gpu: {{product_name: A100, count: 1}}\n"
        )
    };
    zone.apply("alice", &workload("spread", 4, &spec("Distribute")))
        .await;
    let spread = eventually("spread replicas bound", WAIT, || async {
        let c = zone.containers("spread").await;
        c.iter()
            .all(|c| c.node().is_some())
            .then_some(c)
            .filter(|c| c.len() == 4)
    })
    .await;
    let nodes: HashSet<&str> = spread.iter().filter_map(|c| c.node()).collect();
    assert_eq!(nodes.len(), 4, "Distribute puts one replica on each node");
    zone.apply("alice", &workload("packed", 3, &spec("Fill")))
        .await;
    let packed = eventually("packed replicas bound", WAIT, || async {
        let c = zone.containers("packed").await;
        c.iter()
            .all(|c| c.node().is_some())
            .then_some(c)
            .filter(|c| c.len() == 3)
    })
    .await;
    let nodes: HashSet<&str> = packed.iter().filter_map(|c| c.node()).collect();
    assert_eq!(nodes.len(), 1, "Fill packs onto one node: {packed:?}");
    zone.finish().await;
}

async fn a_lost_node_is_replaced_and_stops_its_stale_containers(backend: Backend) {
    let zone = Zone::new(backend).await;
    let sim = zone.sim("n-", 3, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = "  config: {cmd: sleep 1000, affinity: Distribute}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("alice", &workload("w", 2, spec)).await;
    let before = eventually("two replicas running", WAIT, || async {
        let c = zone.containers("w").await;
        (c.iter().filter(|c| c.running()).count() == 2).then_some(c)
    })
    .await;
    let lost = before[0].node().unwrap().to_string();
    let moved = before[0].name.clone();
    sim.pause(&lost);
    let after = eventually("the replica moved to another node", WAIT, || async {
        let c = zone.containers("w").await;
        c.iter()
            .find(|c| c.name == moved && c.running() && c.node() != Some(lost.as_str()))
            .cloned()
    })
    .await;
    assert!(
        after.placement.epoch > before[0].placement.epoch,
        "moving bumps the epoch"
    );
    assert!(!zone.events("NodeNotReady").await.is_empty());
    assert!(!zone.events("Rescheduled").await.is_empty());
    let key = ObjectKey::new(Kind::Container, common::ZONE, common::WS, &moved);
    assert!(
        sim.running_on(&lost).contains(&key),
        "the paused node still runs its copy"
    );
    sim.resume(&lost);
    eventually("the returning node stops its stale copy", WAIT, || async {
        (!sim.running_on(&lost).contains(&key) && !zone.events("StaleStopped").await.is_empty())
            .then_some(())
    })
    .await;
    assert_no_double_booking(&zone.containers("w").await);
    zone.finish().await;
}

async fn a_rolling_update_keeps_desired_minus_max_unavailable(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 2, "");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = |env: &str| {
        format!(
            "  config: {{cmd: sleep 1000, env: [{env}]}}\n  selectors:\n    cpu: {{count: 1}}\n  strategy: {{maxUnavailable: 1}}\n"
        )
    };
    zone.apply("alice", &workload("web", 4, &spec("V=1"))).await;
    let first = eventually("four replicas running", WAIT, || async {
        let c = zone.containers("web").await;
        (c.iter().filter(|c| c.running()).count() == 4).then_some(c)
    })
    .await;
    let old_hash = first[0].hash.clone();
    zone.apply("alice", &workload("web", 4, &spec("V=2"))).await;
    let mut lowest = 4;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = zone.containers("web").await;
        lowest = lowest.min(c.iter().filter(|c| c.running()).count());
        if c.len() == 4 && c.iter().all(|c| c.hash != old_hash && c.running()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update did not finish: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        lowest >= 3,
        "running replicas dropped to {lowest} (desired 4, maxUnavailable 1)"
    );
    zone.finish().await;
}

async fn only_one_scheduler_acts_and_a_standby_takes_over(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 4, "2xA100");
    let first = zone.scheduler(zone.scheduler_config("s1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _second = zone.scheduler(zone.scheduler_config("s2"));
    let spec =
        "  config: {cmd: sleep 1000}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("alice", &workload("one", 3, spec)).await;
    eventually("three replicas running", WAIT, || async {
        let c = zone.containers("one").await;
        (c.iter().filter(|c| c.running()).count() == 3).then_some(())
    })
    .await;
    first.cancel();
    zone.apply("alice", &workload("two", 5, spec)).await;
    eventually("the standby places the rest", WAIT, || async {
        let c = zone.containers("two").await;
        (c.iter().filter(|c| c.running()).count() == 5).then_some(())
    })
    .await;
    let mut all = zone.containers("one").await;
    all.extend(zone.containers("two").await);
    assert_eq!(all.iter().filter(|c| c.node().is_some()).count(), 8);
    assert_no_double_booking(&all);
    zone.finish().await;
}

async fn restart_policies_and_finished_containers_free_their_gpus(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 1, "1xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = |cmd: &str, policy: &str| {
        format!(
            "  config: {{cmd: \"{cmd}\", restartPolicy: {policy}}}\n  selectors:\n    gpu: {{product_name: A100, count: 1}}\n"
        )
    };
    // Succeeds after 0.3 s and is not restarted: the only GPU goes to the next workload.
    zone.apply(
        "alice",
        &workload("done", 1, &spec("sleep 0.3", "OnFailure")),
    )
    .await;
    eventually("done succeeded", WAIT, || async {
        let c = zone.containers("done").await;
        c.first()
            .and_then(|c| c.report.clone())
            .filter(|r| r.state == ContainerState::Succeeded)
    })
    .await;
    zone.apply(
        "alice",
        &workload("flaky", 1, &spec("sleep 0.2; exit 3", "OnFailure")),
    )
    .await;
    let restarted = eventually("flaky restarted twice", WAIT, || async {
        let c = zone.containers("flaky").await;
        c.first()
            .filter(|c| c.placement.restarts >= 2 && c.node().is_some())
            .cloned()
    })
    .await;
    assert_eq!(
        restarted.node(),
        Some("n-00000"),
        "the freed GPU was reused"
    );
    zone.finish().await;
}

async fn credits_pause_a_user_and_resume_at_the_reset(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 1, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    // 3600 credits per hour = 1 per second per GPU; bob may use 2 per period of 8 s.
    zone.apply(
        "admin",
        "apiVersion: v1\nkind: Resourcecredit\nmetadata: {name: a100, zone: z1}\nspec:\n  product_name: A100\n  credit: {per: {hour: 3600}}\n---\napiVersion: v1\nkind: User\nmetadata: {name: bob}\nspec:\n  credits: [{zone: z1, weekly: 2}]\n",
    )
    .await;
    let mut credits = zone.credit_config("c1");
    credits.period = Duration::from_secs(8);
    zone.creditsys(credits.clone());
    let spec =
        "  config: {cmd: sleep 1000}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    // Apply right after a reset, so that the limit is reached well inside the period.
    let period = credits.period.as_millis() as i64;
    let now = dora_store::now_millis();
    let next = credits.period_start(now) + period;
    tokio::time::sleep(Duration::from_millis((next - now) as u64 + 100)).await;
    zone.apply("bob", &workload("job", 1, spec)).await;
    let paused = eventually("bob is paused", WAIT, || async {
        let row = zone.workload("job").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        status.paused.filter(|_| status.desired == 0)
    })
    .await;
    assert!(paused.contains("out of credits"), "{paused}");
    assert!(!zone.events("OutOfCredit").await.is_empty());
    eventually("bob's containers are gone", WAIT, || async {
        zone.containers("job").await.is_empty().then_some(())
    })
    .await;
    eventually("bob resumes after the reset", WAIT, || async {
        let c = zone.containers("job").await;
        c.iter().any(|c| c.running()).then_some(())
    })
    .await;
    assert!(!zone.events("Resumed").await.is_empty());
    zone.finish().await;
}

async fn accounting_stays_exact_and_small_when_the_credit_system_restarts(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 4, "4xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    zone.apply(
        "admin",
        "apiVersion: v1\nkind: Resourcecredit\nmetadata: {name: a100, zone: z1}\nspec:\n  product_name: A100\n  credit: {per: {hour: 3600}}\n",
    )
    .await;
    let spec =
        "  config: {cmd: sleep 2.5}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("carol", &workload("job", 16, spec)).await;
    let first = zone.creditsys(zone.credit_config("c1"));
    // The leader changes while all run: no start or end is reported around the change.
    eventually("the job runs", WAIT, || async {
        let c = zone.containers("job").await;
        (c.iter().filter(|c| c.running()).count() == 16).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    zone.creditsys(zone.credit_config("c2"));
    let containers = eventually("the job finished", WAIT, || async {
        let c = zone.containers("job").await;
        (c.len() == 16
            && c.iter()
                .all(|c| c.report.as_ref().is_some_and(|r| r.state.is_final())))
        .then_some(c)
    })
    .await;
    // One A100 at 3600 credits per hour: one credit per second each ran.
    let expected: f64 = containers
        .iter()
        .map(|c| {
            let report = c.report.as_ref().unwrap();
            (report.finished_at.unwrap() - report.started_at.unwrap()) as f64 / 1000.0
        })
        .sum();
    let key = ObjectKey::new(Kind::Usercredit, common::ZONE, "", "carol");
    let deadline = tokio::time::Instant::now() + WAIT;
    let (account, size) = loop {
        let row = zone.store.get(&key).await.unwrap();
        let size = row.as_ref().map(|row| row.computed.to_string().len());
        let account: Option<CreditAccount> =
            row.and_then(|row| dora_crds::decode(&row.computed).ok());
        if let Some(account) = account
            .as_ref()
            .filter(|a| (a.total - expected).abs() < 0.01)
        {
            break (account.clone(), size.unwrap_or_default());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {expected} credits for 16 containers on one GPU each, the account says {account:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!((account.weekly - account.total).abs() < 1e-9);
    // The row does not grow with the containers it counted.
    assert!(size < 300, "{size} bytes: {account:?}");
    zone.finish().await;
}

async fn malformed_rows_are_reported_and_skipped(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 1, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec =
        "  config: {cmd: sleep 1000}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("alice", &workload("fine", 1, spec)).await;
    eventually("the first workload runs", WAIT, || async {
        zone.containers("fine")
            .await
            .iter()
            .any(|c| c.running())
            .then_some(())
    })
    .await;
    // Rows that bypassed validation: a workload, and a container of the running workload,
    // whose specs do not decode.
    for (kind, name) in [(Kind::Workload, "broken"), (Kind::Container, "broken.0")] {
        let write = SpecWrite {
            key: ObjectKey::new(kind, common::ZONE, common::WS, name),
            precondition: Precondition::None,
            owner: "mallory".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec: serde_json::json!({"replica": "many", "workload": "fine", "index": "zero"}),
            spec_hash: "x".into(),
            desired: serde_json::Value::Null,
            computed: None,
            fence: None,
        };
        zone.store.put_spec(write).await.unwrap();
    }
    let events = eventually("malformed rows reported", WAIT, || async {
        let events = zone.events("Malformed").await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    let names: HashMap<String, String> = events.into_iter().map(|e| (e.name, e.message)).collect();
    assert!(
        names.contains_key("broken") && names.contains_key("broken.0"),
        "{names:?}"
    );
    // The scheduler carries on.
    zone.apply("alice", &workload("after", 1, spec)).await;
    eventually("a later workload runs", WAIT, || async {
        zone.containers("after")
            .await
            .iter()
            .any(|c| c.running())
            .then_some(())
    })
    .await;
    assert!(zone.containers("fine").await.iter().any(|c| c.running()));
    zone.finish().await;
}

async fn concurrent_random_applies_never_double_book(backend: Backend) {
    use rand::Rng;
    let zone = Zone::new(backend).await;
    zone.sim("a-", 3, "4xA100");
    zone.sim("m-", 2, "2xA100,2xH100");
    zone.scheduler(zone.scheduler_config("s1"));
    let mut rng = rand::rng();
    let manifests: Vec<(String, u32)> = (0..12)
        .map(|i| {
            let replicas = rng.random_range(1..4u32);
            let gpus = rng.random_range(1..3u32);
            let model = ["A100", "H100", "All", "[A100, H100]"][rng.random_range(0..4)];
            let affinity = ["First", "Fill", "Distribute", "Random"][rng.random_range(0..4)];
            let spec = format!(
                "  config: {{cmd: sleep 1000, affinity: {affinity}}}\n  selectors:\n    gpu: {{product_name: {model}, count: {gpus}}}\n    cpu: {{count: 500m}}\n"
            );
            (workload(&format!("w{i}"), replicas, &spec), replicas)
        })
        .collect();
    futures::future::join_all(manifests.iter().map(|(m, _)| zone.apply("alice", m))).await;
    let expected: u32 = manifests.iter().map(|(_, r)| r).sum();
    // Settled: every replica has a row, and no placement changed over the last poll.
    let mut last: Option<Vec<(String, Option<String>)>> = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    let all = loop {
        let mut all = Vec::new();
        for i in 0..12 {
            all.extend(zone.containers(&format!("w{i}")).await);
        }
        let bound: Vec<(String, Option<String>)> = all
            .iter()
            .map(|c| (c.name.clone(), c.node().map(str::to_string)))
            .collect();
        if all.len() as u32 == expected && last.as_ref() == Some(&bound) {
            break all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "placements did not settle"
        );
        last = Some(bound);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_no_double_booking(&all);
    let gpus_per_node: HashMap<&str, usize> = all
        .iter()
        .filter_map(|c| c.node().map(|n| (n, c.placement.gpus.len())))
        .fold(HashMap::new(), |mut m, (n, g)| {
            *m.entry(n).or_default() += g;
            m
        });
    assert!(gpus_per_node.values().all(|g| *g <= 4), "{gpus_per_node:?}");
    assert!(
        all.iter().any(|c| c.node().is_some()),
        "something was placed"
    );
    zone.finish().await;
}

async fn pause_resume_drain_and_uncordon(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 2, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = "  config: {cmd: sleep 1000, affinity: Distribute}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("alice", &workload("w", 2, spec)).await;
    let running = |n: usize| {
        let zone = &zone;
        async move {
            let c = zone.containers("w").await;
            (c.iter().filter(|c| c.running()).count() == n).then_some(c)
        }
    };
    eventually("two replicas running", WAIT, || running(2)).await;
    let workload_key = ObjectKey::new(Kind::Workload, common::ZONE, common::WS, "w");
    zone.action(&workload_key, "pause").await;
    eventually("paused: no containers", WAIT, || async {
        let row = zone.workload("w").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        let gone = zone.containers("w").await.is_empty();
        (gone && status.paused.as_deref() == Some("paused by alice")).then_some(())
    })
    .await;
    zone.action(&workload_key, "resume").await;
    eventually("resumed", WAIT, || running(2)).await;
    let node_key = ObjectKey::new(Kind::Node, common::ZONE, "", "n-00000");
    zone.action(&node_key, "drain").await;
    let moved = eventually("everything left the drained node", WAIT, || async {
        let c = running(2).await?;
        c.iter().all(|c| c.node() == Some("n-00001")).then_some(c)
    })
    .await;
    assert_no_double_booking(&moved);
    zone.apply("alice", &workload("later", 1, spec)).await;
    let status = eventually(
        "later waits: the drained node takes nothing",
        WAIT,
        || async {
            let row = zone.workload("later").await?;
            let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
            status.reason.is_some().then_some(status)
        },
    )
    .await;
    assert!(status.reason.unwrap().contains("cordoned"));
    zone.action(&node_key, "uncordon").await;
    eventually("later runs on the uncordoned node", WAIT, || async {
        let c = zone.containers("later").await;
        c.iter()
            .any(|c| c.running() && c.node() == Some("n-00000"))
            .then_some(())
    })
    .await;
    zone.finish().await;
}

async fn a_gang_is_placed_whole_or_not_at_all(backend: Backend) {
    let zone = Zone::new(backend).await;
    zone.sim("n-", 2, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    let spec = |priority: i32| {
        format!(
            "  config: {{cmd: sleep 1000}}\n  selectors:\n    gpu: {{product_name: A100, count: 2}}\n  scheduling: {{gang: true, priority: {priority}}}\n"
        )
    };
    // Three replicas of two GPUs on two nodes of two: never all at once, so none runs.
    zone.apply("alice", &workload("big", 3, &spec(0))).await;
    let status = eventually("the gang waits whole", WAIT, || async {
        let row = zone.workload("big").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        let reason = status.reason.clone().unwrap_or_default();
        (status.pending == 3 && reason.contains("gang of 3 cannot be placed whole"))
            .then_some(status)
    })
    .await;
    assert_eq!(status.ready, 0);
    assert!(
        zone.containers("big")
            .await
            .iter()
            .all(|c| c.node().is_none())
    );
    // A gang that fits, and comes first by priority, is placed whole.
    zone.apply("alice", &workload("pair", 2, &spec(10))).await;
    eventually("the pair runs", WAIT, || async {
        let c = zone.containers("pair").await;
        (c.iter().filter(|c| c.running()).count() == 2).then_some(())
    })
    .await;
    assert!(
        zone.containers("big")
            .await
            .iter()
            .all(|c| c.node().is_none())
    );
    zone.finish().await;
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }
        mod cql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Cql).await;
                }
            )*
        }
    };
}

on_every_store!(
    gpu_workloads_land_only_where_model_and_count_fit,
    a_blocked_workload_holds_back_later_ones_except_backfill,
    distribute_spreads_and_fill_packs,
    a_lost_node_is_replaced_and_stops_its_stale_containers,
    a_rolling_update_keeps_desired_minus_max_unavailable,
    only_one_scheduler_acts_and_a_standby_takes_over,
    restart_policies_and_finished_containers_free_their_gpus,
    credits_pause_a_user_and_resume_at_the_reset,
    accounting_stays_exact_and_small_when_the_credit_system_restarts,
    malformed_rows_are_reported_and_skipped,
    concurrent_random_applies_never_double_book,
    pause_resume_drain_and_uncordon,
    a_gang_is_placed_whole_or_not_at_all,
);
