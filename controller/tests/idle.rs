//! A zone at rest: credit slices that only add to a user's sums reconcile no workload; a user
//! running out of credit does. Its own test binary, as it counts the scheduler's reconciles
//! with a process-wide metrics recorder.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Backend, Zone, eventually, workload};
use dora_crds::Kind;
use dora_crds::status::{CreditAccount, WorkloadStatus};
use dora_store::ObjectKey;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

const WAIT: Duration = Duration::from_secs(30);

/// Counts `dora_reconciles_total` of the scheduler; ignores every other metric.
struct SchedulerReconciles(Arc<AtomicU64>);

impl Recorder for SchedulerReconciles {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let scheduler = key
            .labels()
            .any(|l| l.key() == "controller" && l.value() == "scheduler");
        if key.name() == "dora_reconciles_total" && scheduler {
            Counter::from_arc(self.0.clone())
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_slices_reconcile_nothing_until_a_user_runs_out() {
    let reconciles = Arc::new(AtomicU64::new(0));
    metrics::set_global_recorder(SchedulerReconciles(reconciles.clone()))
        .expect("the only recorder of this test binary");
    let zone = Zone::new(Backend::Sqlite).await;
    zone.sim("n-", 1, "2xA100");
    zone.scheduler(zone.scheduler_config("s1"));
    zone.creditsys(zone.credit_config("c1"));
    // 3600 credits per hour = 1 per second per GPU: dave runs out after about 6 s on 2 GPUs.
    zone.apply(
        "admin",
        "apiVersion: v1\nkind: Resourcecredit\nmetadata: {name: a100, zone: z1}\nspec:\n  product_name: A100\n  credit: {per: {hour: 3600}}\n---\napiVersion: v1\nkind: User\nmetadata: {name: dave}\nspec:\n  credits: [{zone: z1, weekly: 12}]\n",
    )
    .await;
    let spec =
        "  config: {cmd: sleep 1000}\n  selectors:\n    gpu: {product_name: A100, count: 1}\n";
    zone.apply("dave", &workload("job", 2, spec)).await;
    eventually("both replicas run", WAIT, || async {
        let c = zone.containers("job").await;
        (c.iter().filter(|c| c.running()).count() == 2).then_some(())
    })
    .await;
    let key = ObjectKey::new(Kind::Usercredit, common::ZONE, "", "dave");
    let account = || async {
        let row = zone.store.get(&key).await.unwrap()?;
        dora_crds::decode::<CreditAccount>(&row.computed).ok()
    };
    // Let the workload's status settle (a deferred write of counts comes within a second),
    // then watch several slices go by.
    eventually("the status shows both running", WAIT, || async {
        let row = zone.workload("job").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        (status.ready == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (used, counted) = (
        account().await.unwrap().total,
        reconciles.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = account().await.unwrap();
    assert!(
        later.total > used + 1.0,
        "slices counted: {used} -> {later:?}"
    );
    assert!(!later.out_of_credit, "{later:?}");
    assert_eq!(
        reconciles.load(Ordering::SeqCst),
        counted,
        "credit slices that only add to the sums reconciled workloads"
    );
    // Running out of credit flips the account: that reconciles the workload, which pauses.
    eventually("dave's workload pauses", WAIT, || async {
        let row = zone.workload("job").await?;
        let status: WorkloadStatus = dora_crds::decode(&row.computed).ok()?;
        status.paused.filter(|why| why.contains("out of credits"))
    })
    .await;
    assert!(reconciles.load(Ordering::SeqCst) > counted);
    zone.finish().await;
}
