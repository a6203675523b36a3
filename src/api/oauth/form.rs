//! The `application/x-www-form-urlencoded` body of an OAuth request. Its values hold assertions and tokens, so
//! Debug shows the parameter names only.

use std::{borrow::Cow, collections::HashMap};

use http::{HeaderMap, header::CONTENT_TYPE};

use crate::{
    domain::oauth::{ErrorCode, OAuthError},
    service::Error,
};

/// The parameters, borrowed from the body unless percent-decoding changed them (assertions and tokens are
/// base64url, so they never need it).
pub struct Form<'a>(HashMap<Cow<'a, str>, Cow<'a, str>>);

impl<'a> Form<'a> {
    /// Reads the body; a parameter sent twice is refused, as RFC 6749 §3.2 requires.
    pub fn parse(headers: &HeaderMap, body: &'a [u8]) -> Result<Form<'a>, Error> {
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(Form::invalid("send the parameters as application/x-www-form-urlencoded"));
        }
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.insert(name.clone(), value).is_some() {
                let shown: String = name.chars().take(50).collect();
                return Err(Form::invalid(format!("parameter {shown:?} is sent more than once")));
            }
        }
        Ok(Form(params))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|value| value.as_ref())
    }

    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| Form::invalid(format!("`{name}` is required")))
    }

    pub fn invalid(description: impl Into<String>) -> Error {
        Error::OAuth(OAuthError::new(ErrorCode::InvalidRequest, description))
    }
}

impl std::fmt::Debug for Form<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}
