//! `Controller`: watches a primary kind and related kinds, keeps their caches, and runs a
//! reconcile function per changed key with bounded concurrency.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_crds::Kind;
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
use crate::{Cache, Source};

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

/// A controller of one primary kind in one zone.
pub struct Controller {
    name: String,
    source: Source,
    zone: String,
    primary: Kind,
    related: Vec<(Kind, Mapper)>,
    observers: Vec<(Kind, Observer)>,
    caches: HashMap<Kind, Cache>,
    concurrency: usize,
    related_window: Duration,
    watch: WatchConfig,
    signals: mpsc::UnboundedReceiver<ObjectKey>,
    handle: Handle,
}

impl Controller {
    /// A controller named `name` (for logs and metrics) of `primary` in `zone`, reading from
    /// `source`: a store (`Arc<dyn Store>`) or the API ([`dora_client::Client`]).
    pub fn new(name: &str, source: impl Into<Source>, primary: Kind, zone: &str) -> Self {
        let (tx, signals) = mpsc::unbounded_channel();
        let mut caches = HashMap::new();
        caches.insert(primary, Cache::default());
        Controller {
            name: name.to_string(),
            source: source.into(),
            zone: zone.to_string(),
            primary,
            related: Vec::new(),
            observers: Vec::new(),
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
        kind: Kind,
        owner_of: impl Fn(&Row) -> Option<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.watches(kind, move |row| owner_of(row).into_iter().collect())
    }

    /// Also watches `kind`; a change reconciles the primary keys `mapper` returns.
    pub fn watches(
        mut self,
        kind: Kind,
        mapper: impl Fn(&Row) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.caches.entry(kind).or_default();
        self.related.push((kind, Arc::new(mapper)));
        self
    }

    /// Calls `observer` with every watch event of `kind` (a watched kind), after its cache
    /// applied it and before keys are queued: for indexes a reconciler keeps beside the cache.
    pub fn observe_with(
        mut self,
        kind: Kind,
        observer: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observers.push((kind, Arc::new(observer)));
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
    pub fn cache(&self, kind: Kind) -> Cache {
        self.caches.get(&kind).cloned().unwrap_or_default()
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
        let reporter = Arc::new(Reporter::new(&self.source, &self.name, self.primary));
        let watchers = stop.child_token();
        let mut events = SelectAll::new();
        let mut kinds = vec![self.primary];
        kinds.extend(self.related.iter().map(|(kind, _)| *kind));
        kinds.dedup();
        for kind in &kinds {
            let rx = watch(
                self.source.clone(),
                Target::new(*kind, &self.zone),
                self.watch,
                watchers.clone(),
            );
            let kind = *kind;
            let mut rx = rx;
            events.push(
                futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                    .map(move |event| (kind, event)),
            );
        }
        let mut unsynced: HashSet<Kind> = kinds.iter().copied().collect();
        let mut queue = Queue::default();
        let mut running: JoinSet<(ObjectKey, bool, Option<Duration>)> = JoinSet::new();
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
                Some((kind, event)) = events.next() => {
                    if matches!(event, WatchEvent::Listed(_)) {
                        unsynced.remove(&kind);
                    }
                    self.observe(kind, &event, &mut queue);
                }
                Some(key) = self.signals.recv() => queue.add(key, Trigger::Signal),
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((key, failed, requeue)) = done {
                        if let Some(delay) = queue.done(&key, failed) {
                            queue.add_after(key.clone(), Trigger::Retry, delay);
                        }
                        if let Some(after) = requeue {
                            queue.add_after(key, Trigger::Requeue, after);
                        }
                    }
                }
                () = sleep_until(due) => queue.promote_due(),
            }
        }
        watchers.cancel();
        while running.join_next().await.is_some() {}
    }

    /// Updates the cache of `kind` and queues the keys the change concerns.
    fn observe(&self, kind: Kind, event: &WatchEvent, queue: &mut Queue) {
        let Some(cache) = self.caches.get(&kind) else {
            return;
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
        let touched = cache.apply(event);
        for (observed, observer) in &self.observers {
            if *observed == kind {
                observer(event);
            }
        }
        if kind == self.primary {
            for key in &touched {
                queue.add(key.clone(), Trigger::Changed);
            }
        }
        for (related, mapper) in &self.related {
            if *related != kind {
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
    ) -> impl Future<Output = (ObjectKey, bool, Option<Duration>)> + Send + 'static
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
                    (key, false, action.requeue)
                }
                Err(e) => {
                    metrics::counter!("dora_reconciles_total", "controller" => controller, "result" => "error").increment(1);
                    tracing::warn!(result = "error", duration_ms, error = %e, "reconcile failed");
                    (key, true, None)
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
