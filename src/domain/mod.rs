//! The domain: aggregates, their events and rules. Pure: no I/O, no clock, no randomness of its own.

pub mod aggregate;
pub mod api_key;
pub mod app;
pub mod assertion;
pub mod cidr;
pub mod client_address;
pub mod error;
pub mod events;
pub mod ids;
pub mod lease;
pub mod oauth;
pub mod org;
pub mod principal;
pub mod project;
pub mod rate_limit;
pub mod time;
pub mod validate;

pub use error::{DomainError, FieldViolation};
pub use events::{AggregateType, Event};
pub use time::Timestamp;
