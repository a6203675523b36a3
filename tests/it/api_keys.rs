//! API keys end to end: issue, read, list, update, roll, revoke, audit; scopes and API keys as credentials.

use crate::helpers::{Db, TestServer, api_key_request, on_both_databases};
