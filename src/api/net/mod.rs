//! The connection plumbing under the router: accepting sockets, TLS and its handshakes, the client's address,
//! and the framing and count limits every gRPC request is checked against before it is decoded.

pub mod client_address;
pub(crate) mod connection;
pub(crate) mod framing;
pub(crate) mod handshake;
pub(crate) mod incoming;
pub mod limits;
pub mod tls;
