//! The credit system of one zone: every slice, integrates the use of the zone's containers
//! (GPUs by model, CPU cores by model, at the `Resourcecredit` prices per hour) into one
//! `Usercredit` row per user, made automatically. A row holds the sums and the slice they
//! count up to, written in one compare-and-set, so its size does not grow with the number of
//! containers. The leader keeps in memory how far it counted each container, which makes a
//! start or end that its node reports late count exactly; a new leader (or a restart) takes
//! every container as counted as of the row's slice, so it neither loses nor counts twice.
//! A user over the weekly limit of `User.spec.credits` is marked out of credit (the scheduler
//! then pauses their workloads) until the weekly reset.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dora_crds::Kind;
use dora_crds::spec::{ResourcecreditSpec, UserSpec, UsercreditSpec};
use dora_crds::status::{ContainerState, CreditAccount};
use dora_store::{
    Event, EventType, Fence, ObjectKey, Precondition, Row, SpecWrite, StatusColumn, Store,
    StoreError, now_millis,
};
use tokio_util::sync::CancellationToken;

use crate::scheduler::{placement, report};
use dora_runtime::{Cache, Leader, LeaseConfig, Target, WatchConfig, reflect};

/// The component name in leases and events.
pub const COMPONENT: &str = "creditsys";

const HOUR_MILLIS: f64 = 3_600_000.0;
const DAY_MILLIS: i64 = 86_400_000;
/// 1970-01-05T00:00:00Z, a Monday.
const FIRST_MONDAY: i64 = 4 * DAY_MILLIS;
/// How far behind the clock a slice counts: a container's start reaches this leader's cache
/// through the change feed a moment after its node reports it, and a slice must not count up
/// to an instant before which a container started that it has not seen yet. A new leader
/// takes every container as counted up to the row's slice, so one it had missed would lose
/// the time between its start and that slice.
const SETTLE_MILLIS: i64 = 2_000;

/// Credit system settings.
#[derive(Debug, Clone)]
pub struct CreditConfig {
    pub zone: String,
    pub lease: LeaseConfig,
    /// How often use is counted (default 10 s).
    pub slice: Duration,
    /// The weekly reset, at 00:00 UTC of this day.
    pub reset_day: time::Weekday,
    /// The length of an accounting period: a week, except in tests.
    pub period: Duration,
    pub watch: WatchConfig,
}

impl CreditConfig {
    /// Defaults for `zone`: 10 s slices, reset on Monday.
    pub fn new(zone: &str) -> Self {
        CreditConfig {
            zone: zone.to_string(),
            lease: LeaseConfig::default(),
            slice: Duration::from_secs(10),
            reset_day: time::Weekday::Monday,
            period: Duration::from_secs(7 * 86_400),
            watch: WatchConfig::default(),
        }
    }

    /// The start of the period holding `now`.
    pub fn period_start(&self, now: i64) -> i64 {
        let anchor = FIRST_MONDAY + self.reset_day.number_days_from_monday() as i64 * DAY_MILLIS;
        let period = self.period.as_millis() as i64;
        anchor + (now - anchor).div_euclid(period) * period
    }
}

/// The credit system of `zone` runs with [`dora_runtime::run_leader`].
impl Leader for CreditConfig {
    const COMPONENT: &'static str = COMPONENT;

    fn zone(&self) -> &str {
        &self.zone
    }

    fn lease(&self) -> &LeaseConfig {
        &self.lease
    }

    fn lead(
        self,
        store: Arc<dyn Store>,
        fence: Fence,
        lost: CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        lead(store, self, fence, lost)
    }
}

struct Caches {
    containers: Cache,
    accounts: Cache,
    prices: Cache,
    users: Cache,
}

async fn lead(store: Arc<dyn Store>, config: CreditConfig, fence: Fence, lost: CancellationToken) {
    let zone = &config.zone;
    let mut synced = Vec::new();
    let mut open = |kind: Kind, zone: &str| {
        let (cache, ready) = reflect(
            store.clone(),
            Target::new(kind, zone),
            config.watch,
            lost.clone(),
        );
        synced.push(ready);
        cache
    };
    let caches = Caches {
        containers: open(Kind::Container, zone),
        accounts: open(Kind::Usercredit, zone),
        prices: open(Kind::Resourcecredit, zone),
        users: open(Kind::User, ""),
    };
    for mut ready in synced {
        if ready.wait_for(|synced| *synced).await.is_err() {
            return;
        }
    }
    let mut counted = HashMap::new();
    loop {
        match account(&*store, &config, &fence, &caches, &mut counted).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => return,
            Err(e) => {
                tracing::warn!(zone = %config.zone, error = %e, "accounting failed; retrying next slice")
            }
        }
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(config.slice) => {}
        }
    }
}

/// How far this leader counted the containers of one user's account.
struct Counted {
    /// The account row as this leader last read or wrote it; the counts below hold while the
    /// row is still this version.
    row: Arc<Row>,
    /// Per container (`uid#epoch`): the instant up to which its use is in the sums.
    containers: HashMap<String, i64>,
}

/// One container's use since it was last counted.
struct Use {
    uid: String,
    /// The container's workload, `workspace/name`.
    workload: String,
    /// Credits per millisecond.
    rate: f64,
    from: i64,
    until: i64,
    /// Whether `until` is the container's end.
    ended: bool,
}

/// One accounting slice over every user of the zone.
async fn account(
    store: &dyn Store,
    config: &CreditConfig,
    fence: &Fence,
    caches: &Caches,
    counted: &mut HashMap<String, Counted>,
) -> Result<(), StoreError> {
    let now = now_millis() - SETTLE_MILLIS;
    let week_start = config.period_start(now);
    let reset = week_start + config.period.as_millis() as i64;
    let prices: HashMap<String, f64> = caches
        .prices
        .list()
        .iter()
        .filter_map(|row| dora_crds::decode::<ResourcecreditSpec>(&row.resource).ok())
        .map(|spec| (spec.product_name, spec.credit.per.hour / HOUR_MILLIS))
        .collect();
    let mut uses: BTreeMap<String, Vec<Use>> = BTreeMap::new();
    for row in caches.containers.list() {
        let place = placement(&row);
        let Some(report) = report(&row, &place) else {
            continue;
        };
        let Some(started) = report.started_at else {
            continue;
        };
        if !matches!(report.state, ContainerState::Running) && !report.state.is_final() {
            continue;
        }
        let price = |product: &Option<String>| {
            product
                .as_ref()
                .and_then(|p| prices.get(p))
                .copied()
                .unwrap_or(0.0)
        };
        let rate = place.gpus.len() as f64 * price(&place.gpu_product)
            + place.millicpu as f64 / 1000.0 * price(&place.cpu_product);
        let until = if report.state.is_final() {
            report.finished_at.unwrap_or(now).min(now)
        } else {
            now
        };
        let workload = row.resource["workload"].as_str().unwrap_or_default();
        uses.entry(row.owner.clone()).or_default().push(Use {
            uid: format!("{}#{}", row.uid, place.epoch),
            workload: format!("{}/{workload}", row.key.workspace),
            rate,
            from: started,
            until,
            ended: report.state.is_final(),
        });
    }
    let limits: HashMap<String, f64> = caches
        .users
        .list()
        .iter()
        .filter_map(|row| {
            let spec: UserSpec = dora_crds::decode(&row.resource).ok()?;
            let limit = spec.credits.iter().find(|c| c.zone == config.zone)?.weekly;
            Some((row.key.name.clone(), limit))
        })
        .collect();
    let mut users: Vec<String> = uses.keys().cloned().collect();
    users.extend(limits.keys().cloned());
    users.extend(
        caches
            .accounts
            .list()
            .iter()
            .map(|row| row.key.name.clone()),
    );
    users.sort();
    users.dedup();
    counted.retain(|user, _| users.binary_search(user).is_ok());
    for user in users {
        let key = ObjectKey::new(Kind::Usercredit, &config.zone, "", &user);
        let cached = match caches.accounts.get(&key) {
            Some(row) => row,
            None => create_account(store, &key, &user).await?,
        };
        // The cache may not show this leader's own last write yet.
        let mine = counted.remove(&user);
        let row = match &mine {
            Some(mine) if mine.row.computed_version > cached.computed_version => mine.row.clone(),
            _ => cached,
        };
        let known = mine
            .filter(|mine| mine.row.computed_version == row.computed_version)
            .map(|mine| mine.containers);
        let previous: Option<CreditAccount> = dora_crds::decode(&row.computed).ok();
        let mut next = previous.clone().unwrap_or(CreditAccount {
            week_start,
            reset,
            ..CreditAccount::default()
        });
        if next.week_start < week_start {
            next.weekly = 0.0;
            next.workloads.clear();
            next.week_start = week_start;
        }
        next.reset = reset;
        next.limit = limits.get(&user).copied();
        if is_per_container(&row.computed) {
            next.counted_until = now;
        }
        let uses = uses.get(&user).map_or(&[][..], Vec::as_slice);
        let containers = count(&mut next, known.as_ref(), uses, now, week_start);
        next.out_of_credit = next.limit.is_some_and(|limit| next.weekly >= limit);
        if previous.as_ref() == Some(&next) {
            counted.insert(user, Counted { row, containers });
            continue;
        }
        let written = store
            .put_status(
                &key,
                StatusColumn::Computed,
                Some(row.computed_version),
                dora_crds::encode(&next).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                Some(fence),
            )
            .await?;
        counted.insert(
            user.clone(),
            Counted {
                row: written,
                containers,
            },
        );
        let was_out = previous.as_ref().is_some_and(|p| p.out_of_credit);
        if next.out_of_credit != was_out {
            let (kind, reason, message) = if next.out_of_credit {
                (
                    EventType::Warning,
                    "OutOfCredit",
                    format!(
                        "{user} used {:.2} of {:.2} weekly credits in zone {}; workloads pause until {}",
                        next.weekly,
                        next.limit.unwrap_or_default(),
                        config.zone,
                        dora_runtime::time::rfc3339(reset)
                    ),
                )
            } else {
                (
                    EventType::Normal,
                    "CreditRestored",
                    format!("{user} may run workloads again"),
                )
            };
            let event = Event::new(&key, kind, reason, message, COMPONENT);
            if let Err(e) = store.append_event(event).await {
                tracing::warn!(error = %e, "could not record an event");
            }
        }
    }
    Ok(())
}

/// Adds to `account` the use of `uses` since each was last counted, and returns how far each
/// is counted now. `known` is how far this leader counted them at the previous slice; without
/// it, every container is taken as counted as of `account.counted_until`: one seen running
/// then up to it, one seen ended in full.
fn count(
    account: &mut CreditAccount,
    known: Option<&HashMap<String, i64>>,
    uses: &[Use],
    now: i64,
    week_start: i64,
) -> HashMap<String, i64> {
    let mut counted = HashMap::with_capacity(uses.len());
    let mut moved = false;
    for used in uses {
        let from = match known {
            Some(known) => known.get(&used.uid).copied().unwrap_or(used.from),
            None if used.ended && used.until <= account.counted_until => used.until,
            None => account.counted_until,
        }
        .max(used.from);
        // A running container is counted up to now; if it had in fact ended earlier (its
        // report arrives a little late), the excess is given back once the end is known.
        if used.until > from || (used.ended && used.until < from) {
            account.total += used.rate * (used.until - from) as f64;
            // Only the part inside this period counts against the weekly limit.
            let weekly = used.rate * (used.until.max(week_start) - from.max(week_start)) as f64;
            account.weekly += weekly;
            account.charge(&used.workload, weekly);
            counted.insert(used.uid.clone(), used.until);
            moved = true;
        } else {
            counted.insert(used.uid.clone(), from);
        }
    }
    if moved {
        account.counted_until = now;
    }
    counted
}

/// Whether an account was written by a credit system that kept an instant per container
/// (`accounted`) instead of `countedUntil`. Its containers were counted up to about its last
/// slice: counting on from now loses at most one slice, where counting from their starts would
/// count them all again. The next write drops the map.
fn is_per_container(computed: &serde_json::Value) -> bool {
    computed.get("accounted").is_some() && computed.get("countedUntil").is_none()
}

async fn create_account(
    store: &dyn Store,
    key: &ObjectKey,
    user: &str,
) -> Result<Arc<Row>, StoreError> {
    let spec = UsercreditSpec {
        user: user.to_string(),
    };
    let spec = dora_crds::encode(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let write = SpecWrite {
        key: key.clone(),
        precondition: Precondition::Absent,
        owner: COMPONENT.into(),
        labels: Default::default(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Usercredit, &spec),
        spec,
        desired: serde_json::Value::Null,
        computed: None,
        fence: None,
    };
    match store.put_spec(write).await {
        Ok(outcome) => Ok(outcome.row().clone()),
        Err(StoreError::AlreadyExists) => store
            .get(key)
            .await?
            .map(Arc::new)
            .ok_or(StoreError::NotFound),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One credit per millisecond.
    fn running(uid: &str, from: i64, now: i64) -> Use {
        Use {
            uid: uid.into(),
            workload: format!("ws/{}", &uid[..1]),
            rate: 1.0,
            from,
            until: now,
            ended: false,
        }
    }

    fn ended(uid: &str, from: i64, until: i64) -> Use {
        Use {
            ended: true,
            ..running(uid, from, until)
        }
    }

    #[test]
    fn rows_with_an_instant_per_container_are_recognised() {
        let old = serde_json::json!({"total": 5.0, "accounted": {"u#1": 1000}});
        assert!(is_per_container(&old));
        let new = dora_crds::encode(&CreditAccount::default()).unwrap();
        assert!(!is_per_container(&new));
        assert!(!is_per_container(&serde_json::Value::Null));
    }

    #[test]
    fn an_account_of_100k_containers_stays_small() {
        // 100 replicas each of 1,000 workloads: one entry per workload, no more.
        let uses: Vec<Use> = (0..100_000)
            .map(|i| Use {
                workload: format!("team-{:02}/train-{:04}", i % 7, i / 100),
                ..running(&format!("{}#1", uuid::Uuid::new_v4()), i, 200_000)
            })
            .collect();
        let mut account = CreditAccount::default();
        let counted = count(&mut account, None, &uses, 200_000, 0);
        assert_eq!(counted.len(), 100_000);
        assert_eq!(account.workloads.len(), 1000);
        let size = dora_crds::encode(&account).unwrap().to_string().len();
        println!("Usercredit status at 100,000 containers in 1,000 workloads: {size} bytes");
        // Scylla warns of cells over 1 MB.
        assert!(size < 64 << 10, "{size} bytes");
    }

    #[test]
    fn use_per_workload_adds_up_and_stays_bounded() {
        let mut account = CreditAccount::default();
        let workloads = CreditAccount::MAX_WORKLOADS + 500;
        let uses: Vec<Use> = (0..workloads as i64)
            .map(|i| Use {
                workload: format!("ws/w{i}"),
                ..running(&format!("u{i}#1"), 1000 - i % 1000, 1000)
            })
            .collect();
        count(&mut account, None, &uses, 1000, 0);
        assert_eq!(account.workloads.len(), CreditAccount::MAX_WORKLOADS);
        assert!(
            account
                .workloads
                .contains_key(CreditAccount::OTHER_WORKLOADS)
        );
        let listed: f64 = account.workloads.values().sum();
        assert!(
            (listed - account.weekly).abs() < 1e-6,
            "{listed} vs {}",
            account.weekly
        );
        // The largest stay listed by name.
        assert_eq!(account.workloads.get("ws/w999"), Some(&999.0));
    }

    /// Slices at 1000, 2000 and 3000 ms: `a` runs throughout, `b` ends at 1800 but its node
    /// reports that only after the slice at 2000, `c` runs from 1200 to 1500 between slices.
    #[test]
    fn late_ends_are_given_back_and_a_new_leader_counts_on_from_the_row() {
        let slices = [
            (1000, vec![running("a", 0, 1000), running("b", 500, 1000)]),
            (
                2000,
                vec![
                    running("a", 0, 2000),
                    running("b", 500, 2000),
                    ended("c", 1200, 1500),
                ],
            ),
            (
                3000,
                vec![
                    running("a", 0, 3000),
                    ended("b", 500, 1800),
                    ended("c", 1200, 1500),
                ],
            ),
        ];
        let exact = 3000.0 + 1300.0 + 300.0;
        // One leader throughout: b's excess beyond 1800 is given back.
        let mut account = CreditAccount::default();
        let mut known = None;
        for (now, uses) in &slices {
            known = Some(count(&mut account, known.as_ref(), uses, *now, 0));
        }
        assert_eq!(account.total, exact);
        assert_eq!(account.weekly, exact);
        assert_eq!(account.counted_until, 3000);
        // A new leader after the second slice knows only the row: every container counted
        // up to 2000, c in full. Nothing is counted twice or lost (b's late end came before
        // the change of leader, in the second slice here).
        let on_time = [
            (1000, vec![running("a", 0, 1000), running("b", 500, 1000)]),
            (
                2000,
                vec![
                    running("a", 0, 2000),
                    ended("b", 500, 1800),
                    ended("c", 1200, 1500),
                ],
            ),
            (
                3000,
                vec![
                    running("a", 0, 3000),
                    ended("b", 500, 1800),
                    ended("c", 1200, 1500),
                ],
            ),
        ];
        for restart_before in 1..on_time.len() {
            let mut account = CreditAccount::default();
            let mut known = None;
            for (i, (now, uses)) in on_time.iter().enumerate() {
                if i == restart_before {
                    known = None;
                }
                known = Some(count(&mut account, known.as_ref(), uses, *now, 0));
            }
            assert_eq!(
                account.total, exact,
                "a new leader at slice {restart_before}"
            );
        }
    }

    #[test]
    fn weeks_start_at_midnight_utc_of_the_reset_day() {
        let mut config = CreditConfig::new("z");
        // 2026-11-29T12:00:00Z is a Sunday.
        let now = 1_795_953_600_000;
        // The Monday before: 2026-11-23T00:00:00Z.
        assert_eq!(config.period_start(now), 1_795_392_000_000);
        config.reset_day = time::Weekday::Sunday;
        assert_eq!(config.period_start(now), 1_795_910_400_000);
    }
}
