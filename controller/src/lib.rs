//! Dora's built-in controllers, on the runtime of [`dora_runtime`]: the per-zone scheduler,
//! credit system and garbage collector.

pub mod creditsys;
pub mod gc;
pub mod scheduler;
