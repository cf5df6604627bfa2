//! Dora's HTTPS API: resources per scope, multi-document apply, watch as NDJSON from the
//! change feed, versions and events, encrypted bearer tokens and role checks.

mod directory;
mod error;
mod forward;
mod guard;
mod issued;
mod nodes;
mod openapi;
mod path;
mod render;
mod routes;
mod service;
mod session;
mod state;
mod tls;
mod token;

pub use directory::Directory;
pub use error::ApiError;
pub use forward::Forwarder;
pub use guard::{GuardOptions, Rate, TrustedProxy};
pub use path::Target;
pub use render::timestamp;
pub use service::{Applied, Deleted, Identity, Service};
pub use state::{ApiServer, Options};
pub use tls::{NodeCertificate, Pki, write_private};
pub use token::{IssuedToken, TokenClaims, TokenKey, VerifiedToken};
