//! The controller runtime (watch, cache, reconcile queue, backoff, leases) and the built-in
//! controllers: the per-zone scheduler and credit system. Filled by the controller issue.
