//! `Controller`: watches a primary kind and related kinds, keeps their caches, and runs a
//! reconcile function per changed key with bounded concurrency. Its stages compose: a
//! [`Predicate`] between a kind's watch and the queue, an [`ErrorPolicy`] after a failed
//! reconcile.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_store::{ObjectKey, Row};
use futures::StreamExt;
use futures::stream::SelectAll;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::queue::{Queue, Trigger};
use crate::report::Reporter;
use crate::watcher::{Target, WatchConfig, WatchEvent, watch};
use crate::{Backoff, Cache, ErrorPolicy, KindRef, Predicate, Source};

/// Maps a changed related row to the primary keys to reconcile.
pub type Mapper = Arc<dyn Fn(&Row) -> Vec<ObjectKey> + Send + Sync>;

/// Sees every watch event of one kind, after the cache has applied it.
pub type Observer = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

/// What a reconcile asks for next, and whether it changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue: Option<Duration>,
    changed: bool,
}

impl Action {
    /// Reconcile again after `after`, even if nothing changes.
    pub fn requeue(after: Duration) -> Self {
        Action {
            requeue: Some(after),
            changed: true,
        }
    }

    /// Reconcile again only when the object or a related one changes.
    pub fn await_change() -> Self {
        Action {
            requeue: None,
            changed: true,
        }
    }

    /// Whether the reconcile wrote anything (the default). One that did not is logged at
    /// debug rather than info, so that logs show what changed.
    pub fn changed(mut self, changed: bool) -> Self {
        self.changed = changed;
        self
    }
}

/// One reconcile: the key, its cached row (`None` when it was deleted), and why.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: ObjectKey,
    pub object: Option<Arc<Row>>,
    pub trigger: Trigger,
}

/// Asks a running controller to reconcile keys (from timers, actions, other controllers).
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<ObjectKey>,
}

impl Handle {
    /// Queues `key` for reconcile.
    pub fn enqueue(&self, key: ObjectKey) {
        let _ = self.tx.send(key);
    }
}

/// How a reconcile ended: the requeue it asked for, or its error.
type Outcome = Result<Option<Duration>, String>;

/// A controller of one primary kind in one zone.
pub struct Controller {
    name: String,
    source: Source,
    zone: String,
    primary: KindRef,
    related: Vec<(KindRef, Mapper)>,
    observers: Vec<(KindRef, Observer)>,
    predicates: Vec<(KindRef, Arc<dyn Predicate>)>,
    error_policy: Arc<dyn ErrorPolicy>,
    caches: HashMap<KindRef, Cache>,
    concurrency: usize,
    related_window: Duration,
    watch: WatchConfig,
    signals: mpsc::UnboundedReceiver<ObjectKey>,
    handle: Handle,
}

impl Controller {
    /// A controller named `name` (for logs and metrics) of `primary` (a [`Kind`] or any
    /// [`KindRef`]) in `zone`, reading from `source`: a store (`Arc<dyn Store>`) or the API
    /// ([`dora_client::Client`]).
    ///
    /// [`Kind`]: dora_crds::Kind
    pub fn new(
        name: &str,
        source: impl Into<Source>,
        primary: impl Into<KindRef>,
        zone: &str,
    ) -> Self {
        let primary = primary.into();
        let (tx, signals) = mpsc::unbounded_channel();
        let mut caches = HashMap::new();
        caches.insert(primary.clone(), Cache::default());
        Controller {
            name: name.to_string(),
            source: source.into(),
            zone: zone.to_string(),
            primary,
            related: Vec::new(),
            observers: Vec::new(),
            predicates: Vec::new(),
            error_policy: Arc::new(Backoff::default()),
            caches,
            concurrency: 16,
            related_window: Duration::ZERO,
            watch: WatchConfig::default(),
            signals,
            handle: Handle { tx },
        }
    }

    /// Also watches `kind`, whose rows belong to the primary object `owner_of` names.
    pub fn owns(
        self,
        kind: impl Into<KindRef>,
        owner_of: impl Fn(&Row) -> Option<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.watches(kind, move |row| owner_of(row).into_iter().collect())
    }

    /// Also watches `kind`; a change reconciles the primary keys `mapper` returns.
    pub fn watches(
        mut self,
        kind: impl Into<KindRef>,
        mapper: impl Fn(&Row) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        let kind = kind.into();
        self.caches.entry(kind.clone()).or_default();
        self.related.push((kind, Arc::new(mapper)));
        self
    }

    /// [`Controller::owns`] through `ownerReferences`, as kube-runtime's `owns`: watches `kind`
    /// and reconciles the object of the primary kind that each of its objects names as its
    /// controller, so a controller hears of every change to the objects it made. The owner is
    /// looked for where the object lives, as far as the primary kind's scope has a zone and a
    /// workspace.
    pub fn owns_by_reference(self, kind: impl Into<KindRef>) -> Self {
        let owner = self.primary.clone();
        self.watches(kind, move |row| {
            row.meta
                .owner_references
                .iter()
                .filter(|reference| reference.controller && reference.kind == owner.name)
                .map(|reference| {
                    ObjectKey::custom(
                        &owner.name,
                        owner.scope,
                        &row.key.zone,
                        &row.key.workspace,
                        &reference.name,
                    )
                })
                .collect()
        })
    }

    /// Calls `observer` with every watch event of `kind` (a watched kind), after its cache
    /// applied it and before keys are queued: for indexes a reconciler keeps beside the cache.
    pub fn observe_with(
        mut self,
        kind: impl Into<KindRef>,
        observer: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observers.push((kind.into(), Arc::new(observer)));
        self
    }

    /// Passes on to the queue only the changes of `kind` (the primary or a related kind) that
    /// `predicate` lets through, such as [`generation_changed`](crate::generation_changed);
    /// its cache still takes every change. Several predicates must all pass.
    pub fn with_predicate(mut self, kind: impl Into<KindRef>, predicate: impl Predicate) -> Self {
        self.predicates.push((kind.into(), Arc::new(predicate)));
        self
    }

    /// What happens after a failed reconcile (default: [`Backoff::default`], retrying with
    /// backoff until it succeeds).
    pub fn error_policy(mut self, policy: impl ErrorPolicy) -> Self {
        self.error_policy = Arc::new(policy);
        self
    }

    /// Changes of related objects within `window` reconcile their primary once, after the
    /// window (default: at once). A primary of many owned objects is then not reconciled once
    /// per owned change in a burst; changes of the primary itself are never delayed.
    pub fn batch_related(mut self, window: Duration) -> Self {
        self.related_window = window;
        self
    }

    /// At most `n` reconciles at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How the watchers poll.
    pub fn watch_config(mut self, config: WatchConfig) -> Self {
        self.watch = config;
        self
    }

    /// The cache of a watched kind (the primary or a related one).
    pub fn cache(&self, kind: impl Into<KindRef>) -> Cache {
        self.caches.get(&kind.into()).cloned().unwrap_or_default()
    }

    /// A handle that queues keys from outside.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs until `stop` is cancelled, then lets running reconciles finish. Nothing is
    /// reconciled before every watched kind has been listed once, so reconcilers always see
    /// complete caches.
    pub async fn run<R, Fut, E>(mut self, reconcile: R, stop: CancellationToken)
    where
        R: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let reporter = Arc::new(Reporter::new(&self.source, &self.name, &self.primary));
        let watchers = stop.child_token();
        let mut events = SelectAll::new();
        let mut kinds = vec![self.primary.clone()];
        for (kind, _) in &self.related {
            if !kinds.contains(kind) {
                kinds.push(kind.clone());
            }
        }
        for (index, kind) in kinds.iter().enumerate() {
            let mut rx = watch(
                self.source.clone(),
                Target::new(kind, &self.zone),
                self.watch,
                watchers.clone(),
            );
            events.push(
                futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                    .map(move |event| (index, event)),
            );
        }
        let mut unsynced: HashSet<usize> = (0..kinds.len()).collect();
        let mut queue = Queue::default();
        let mut running: JoinSet<(ObjectKey, Outcome)> = JoinSet::new();
        let name = self.name.clone();
        loop {
            if unsynced.is_empty() {
                while queue.running() < self.concurrency {
                    let Some((key, trigger)) = queue.take() else {
                        break;
                    };
                    let object = self.caches[&self.primary].get(&key);
                    running.spawn(self.reconcile_one(
                        reconcile.clone(),
                        reporter.clone(),
                        Request {
                            key,
                            object,
                            trigger,
                        },
                    ));
                }
            }
            metrics::gauge!("dora_controller_queue_depth", "controller" => name.clone())
                .set(queue.depth() as f64);
            let due = queue.next_due();
            tokio::select! {
                () = stop.cancelled() => break,
                Some((index, event)) = events.next() => {
                    if matches!(event, WatchEvent::Listed(_)) {
                        unsynced.remove(&index);
                    }
                    self.observe(&kinds[index], &event, &mut queue);
                }
                Some(key) = self.signals.recv() => queue.add(key, Trigger::Signal),
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((key, outcome)) = done {
                        self.finish(&mut queue, key, outcome);
                    }
                }
                () = sleep_until(due) => queue.promote_due(),
            }
        }
        watchers.cancel();
        while running.join_next().await.is_some() {}
    }

    /// Marks a reconcile done and queues the key again as it asked, or as the error policy
    /// says after a failure.
    fn finish(&self, queue: &mut Queue, key: ObjectKey, outcome: Outcome) {
        let failures = queue.done(&key, outcome.is_err());
        match outcome {
            Ok(Some(after)) => queue.add_after(key, Trigger::Requeue, after),
            Ok(None) => {}
            Err(error) => match self.error_policy.retry(&key, &error, failures) {
                Some(delay) => queue.add_after(key, Trigger::Retry, delay),
                None => tracing::info!(
                    controller = %self.name, kind = %key.kind, zone = %key.zone,
                    workspace = %key.workspace, name = %key.name, failures,
                    "giving up until it changes"
                ),
            },
        }
    }

    /// Updates the cache of `kind` and queues the keys the change concerns that its
    /// predicates pass.
    fn observe(&self, kind: &KindRef, event: &WatchEvent, queue: &mut Queue) {
        let Some(cache) = self.caches.get(kind) else {
            return;
        };
        let predicates: Vec<&Arc<dyn Predicate>> = self
            .predicates
            .iter()
            .filter(|(filtered, _)| filtered == kind)
            .map(|(_, predicate)| predicate)
            .collect();
        // The rows as they were, for the predicates to compare with.
        let before: HashMap<ObjectKey, Arc<Row>> = match event {
            _ if predicates.is_empty() => HashMap::new(),
            WatchEvent::Applied(row) => cache
                .get(&row.key)
                .map(|old| (row.key.clone(), old))
                .into_iter()
                .collect(),
            WatchEvent::Listed(_) => cache
                .list()
                .into_iter()
                .map(|old| (old.key.clone(), old))
                .collect(),
            WatchEvent::Deleted(_) => HashMap::new(),
        };
        let removed: Vec<Arc<Row>> = match event {
            WatchEvent::Deleted(key) => cache.get(key).into_iter().collect(),
            WatchEvent::Listed(rows) => {
                let listed: HashSet<&ObjectKey> = rows.iter().map(|row| &row.key).collect();
                cache
                    .list()
                    .into_iter()
                    .filter(|row| !listed.contains(&row.key))
                    .collect()
            }
            WatchEvent::Applied(_) => Vec::new(),
        };
        let mut touched = cache.apply(event);
        if !predicates.is_empty() {
            touched.retain(|key| {
                cache.get(key).is_none_or(|new| {
                    let old = before.get(key).map(|old| old.as_ref());
                    predicates
                        .iter()
                        .all(|predicate| predicate.passes(old, &new))
                })
            });
        }
        for (observed, observer) in &self.observers {
            if observed == kind {
                observer(event);
            }
        }
        if *kind == self.primary {
            for key in &touched {
                queue.add(key.clone(), Trigger::Changed);
            }
        }
        for (related, mapper) in &self.related {
            if related != kind {
                continue;
            }
            let current = touched.iter().filter_map(|key| cache.get(key));
            for row in current.chain(removed.iter().cloned()) {
                for key in mapper(&row) {
                    queue.add_batched(key, Trigger::Related, self.related_window);
                }
            }
        }
    }

    fn reconcile_one<R, Fut, E>(
        &self,
        reconcile: Arc<R>,
        reporter: Arc<Reporter>,
        request: Request,
    ) -> impl Future<Output = (ObjectKey, Outcome)> + Send + 'static
    where
        R: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let controller = self.name.clone();
        let key = request.key.clone();
        let span = tracing::info_span!(
            "reconcile",
            controller = %controller,
            kind = %key.kind,
            zone = %key.zone,
            workspace = %key.workspace,
            name = %key.name,
            trigger = request.trigger.as_str(),
        );
        let object = request.object.clone();
        async move {
            let started = Instant::now();
            let result = reconcile(request).await;
            let elapsed = started.elapsed();
            if let Some(object) = object {
                let outcome = result.as_ref().map(|_| ()).map_err(ToString::to_string);
                reporter.record(&object, outcome).await;
            }
            let duration_ms = elapsed.as_secs_f64() * 1000.0;
            metrics::histogram!("dora_reconcile_duration_seconds", "controller" => controller.clone())
                .record(elapsed.as_secs_f64());
            match result {
                Ok(action) => {
                    metrics::counter!("dora_reconciles_total", "controller" => controller, "result" => "ok").increment(1);
                    if action.changed {
                        tracing::info!(result = "ok", duration_ms, requeue = ?action.requeue, "reconciled");
                    } else {
                        tracing::debug!(result = "unchanged", duration_ms, requeue = ?action.requeue, "reconciled");
                    }
                    (key, Ok(action.requeue))
                }
                Err(e) => {
                    metrics::counter!("dora_reconciles_total", "controller" => controller, "result" => "error").increment(1);
                    tracing::warn!(result = "error", duration_ms, error = %e, "reconcile failed");
                    (key, Err(e.to_string()))
                }
            }
        }
        .instrument(span)
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
