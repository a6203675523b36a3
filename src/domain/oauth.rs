//! OAuth 2.0 answers that are rules of the domain: the error codes of RFC 6749 §5.2 (and RFC 7009's), and which
//! scopes a token may carry.

use std::collections::HashSet;

use super::{
    api_key::{MAX_SCOPES, is_valid_scope},
    assertion::AssertionError,
};

/// The error codes of RFC 6749 §5.2, and RFC 7009 §2.2.1's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    /// RFC 6750 §3.1: a bearer token that authorizes a call is not active, or lacks the scope the call needs.
    InvalidToken,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidToken => "invalid_token",
        }
    }
}

/// A refusal of an OAuth endpoint: its code and a description for people, which never repeats a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError { code, description: description.into() }
    }

    /// An assertion refused where it authenticates the client.
    pub fn client(error: AssertionError) -> Self {
        OAuthError::new(ErrorCode::InvalidClient, format!("client authentication failed: {error}"))
    }

    /// An assertion refused where it is the grant.
    pub fn grant(error: AssertionError) -> Self {
        OAuthError::new(ErrorCode::InvalidGrant, error.to_string())
    }
}

/// The scopes a token gets: those `requested` (space-separated, RFC 6749 §3.3) if the application may ask for
/// each, or, when none are requested, all it may ask for. An application with no `allowed` list may ask for any
/// well-formed scope.
pub fn grant_scopes(requested: Option<&str>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    let requested: Vec<&str> =
        requested.map(|r| r.split(' ').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if requested.is_empty() {
        return Ok(allowed.to_vec());
    }
    if requested.len() > MAX_SCOPES {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("at most {MAX_SCOPES} scopes may be requested"),
        ));
    }
    let mut seen = HashSet::new();
    let mut granted = Vec::with_capacity(requested.len());
    for scope in requested {
        if !is_valid_scope(scope) {
            let shown: String = scope.chars().take(100).collect();
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("{shown:?} is not a scope: scopes look like resource:action (e.g. invoices:read)"),
            ));
        }
        if !allowed.is_empty() && !allowed.iter().any(|a| a == scope) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("the application may not ask for scope {scope:?} (see its allowed_scopes)"),
            ));
        }
        if seen.insert(scope) {
            granted.push(scope.to_owned());
        }
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn requested_scopes_must_be_allowed() {
        let allowed = owned(&["invoices:read", "invoices:write"]);
        assert_eq!(grant_scopes(None, &allowed), Ok(allowed.clone()), "none asked: all allowed");
        assert_eq!(grant_scopes(Some(""), &allowed), Ok(allowed.clone()));
        assert_eq!(
            grant_scopes(Some("invoices:read invoices:read"), &allowed),
            Ok(owned(&["invoices:read"]))
        );
        let refused = grant_scopes(Some("invoices:read admin:all"), &allowed);
        assert_eq!(refused.map_err(|e| e.code), Err(ErrorCode::InvalidScope));
    }

    #[test]
    fn without_a_list_any_well_formed_scope_is_granted() {
        assert_eq!(grant_scopes(Some("a:b c:d"), &[]), Ok(owned(&["a:b", "c:d"])));
        assert_eq!(grant_scopes(None, &[]), Ok(vec![]));
        assert_eq!(grant_scopes(Some("NOT A SCOPE"), &[]).map_err(|e| e.code), Err(ErrorCode::InvalidScope));
        let many = (0..=MAX_SCOPES).map(|i| format!("s:{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(grant_scopes(Some(&many), &[]).map_err(|e| e.code), Err(ErrorCode::InvalidScope));
    }
}
