//! The controller runtime (watch, cache, reconcile queue, backoff, leases) over the store or
//! the HTTPS API, and the built-in controllers: the per-zone scheduler, credit system and
//! garbage collector.
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn dora_store::Store>) {
//! use dora_controller::{Action, Controller, Request};
//! use dora_crds::Kind;
//!
//! let controller = Controller::new("example", store, Kind::Workload, "default");
//! let stop = tokio_util::sync::CancellationToken::new();
//! controller
//!     .run(
//!         |request: Request| async move {
//!             tracing::info!(exists = request.object.is_some(), "seen");
//!             Ok::<_, std::convert::Infallible>(Action::await_change())
//!         },
//!         stop,
//!     )
//!     .await;
//! # }
//! ```

mod cache;
mod controller;
pub mod creditsys;
pub mod gc;
mod leader;
mod queue;
mod report;
pub mod scheduler;
mod signal;
mod source;
mod time;
mod typed;
mod watcher;

pub use cache::{Cache, reflect};
pub use controller::{Action, Controller, Handle, Mapper, Observer, Request};
pub use leader::{LeaseConfig, holder_name, run_elected};
pub use queue::Trigger;
pub use signal::stop_on_signal;
pub use source::{Source, row_of};
pub use typed::{Object, Resource};
pub use watcher::{Target, WatchConfig, WatchEvent, watch};
