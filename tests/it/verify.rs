//! VerifyApiKey end to end: every code, networks, expiry, rolls, revocation under load, usage, two processes.

use crate::helpers::{Db, TestServer, on_both_databases};
