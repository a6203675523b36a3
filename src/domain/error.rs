//! The ways a command can be refused by the domain's rules.

use std::fmt;

/// One invalid field of a request, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation { field: field.into(), description: description.into() }
    }
}

/// A refusal. `reason` is a stable machine-readable code (e.g. `APP_NOT_FOUND`); `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{message}")]
    NotFound { reason: &'static str, message: String },
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, message: String },
    #[error("{message}")]
    PermissionDenied { reason: &'static str, message: String },
    /// A limit on the caller's use ran out (a rate limit or a quota); trying later helps.
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String },
}

impl DomainError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        DomainError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        DomainError::NotFound { reason, message: message.into() }
    }

    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        DomainError::AlreadyExists { reason, message: message.into() }
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        DomainError::FailedPrecondition { reason, message: message.into() }
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        DomainError::PermissionDenied { reason, message: message.into() }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
    parts.join("; ")
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}
