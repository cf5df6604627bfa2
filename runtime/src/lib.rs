//! The controller runtime of Dora: the library a controller depends on to reconcile any kind,
//! built in or defined at run time, from inside the cluster (over the store) or from anywhere
//! (over the HTTPS API with a token, limited by its role).
//!
//! A [`Controller`] watches a primary kind and related kinds, keeps their [`Cache`]s, and
//! calls a reconcile function per changed object, at most once at a time per object, with
//! backoff on errors. Over the API it records each outcome in the object's status
//! (`observedGeneration` and a `Reconciled` condition) and failures as warning events. Its
//! stages compose as kube-runtime's do: a [`Predicate`] between a kind's watch and the queue
//! (such as [`generation_changed`], which ignores status-only writes), and the caller's
//! [`ErrorPolicy`] after a failed reconcile ([`Backoff`] by default). The pieces it is built
//! from ([`watch`], [`reflect`], [`FeedReader`], [`run_elected`]) are usable alone; a
//! component of which one replica per zone leads at a time starts with [`run_leader`].
//!
//! ```no_run
//! # async fn example(client: dora_client::Client) {
//! use dora_runtime::{Action, Controller, Request, stop_on_signal};
//! use dora_crds::Kind;
//!
//! Controller::new("example", client, Kind::Workload, "default")
//!     .run(
//!         |request: Request| async move {
//!             tracing::info!(name = %request.key.name, exists = request.object.is_some(), "seen");
//!             Ok::<_, std::convert::Infallible>(Action::await_change())
//!         },
//!         stop_on_signal(),
//!     )
//!     .await;
//! # }
//! ```

mod cache;
mod controller;
mod feed;
mod kind;
mod leader;
mod policy;
mod predicate;
mod queue;
mod report;
mod signal;
mod source;
pub mod time;
mod typed;
mod watcher;

pub use cache::{Cache, reflect};
pub use controller::{Action, Controller, Handle, Mapper, Observer, Request};
pub use feed::FeedReader;
pub use kind::KindRef;
pub use leader::{Leader, LeaseConfig, holder_name, run_elected, run_leader};
pub use policy::{Backoff, ErrorPolicy};
pub use predicate::{Predicate, generation_changed};
pub use queue::Trigger;
pub use signal::stop_on_signal;
pub use source::{Source, row_of};
pub use typed::{Object, Resource};
pub use watcher::{Target, WatchConfig, WatchEvent, watch};
