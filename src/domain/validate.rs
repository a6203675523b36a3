//! Checks of request fields that every use case shares; each failure names the field and how to fix it.

use super::{DomainError, FieldViolation};

/// The longest ID or name keymint accepts.
pub const MAX_LEN: usize = 200;

/// Collects the violations of one request, so that a caller learns about every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Violations::default()
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// An ID: not empty, at most 200 characters.
    pub fn id(&mut self, field: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > MAX_LEN {
            self.add(field, format!("must be at most {MAX_LEN} characters"));
        }
        self
    }

    /// A name: 1 to 200 characters, not only white space.
    pub fn name(&mut self, field: &str, value: &str) -> &mut Self {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > MAX_LEN {
            self.add(field, format!("must be at most {MAX_LEN} characters"));
        }
        self
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::InvalidArgument(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field() {
        let mut v = Violations::new();
        v.id("project_id", "").id("app_id", &"x".repeat(201)).name("name", "  ");
        let Err(DomainError::InvalidArgument(found)) = v.into_result() else {
            unreachable!("three fields are invalid")
        };
        let fields: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["project_id", "app_id", "name"]);
    }

    #[test]
    fn accepts_the_limits() {
        let mut v = Violations::new();
        v.id("id", &"7".repeat(200)).name("name", "é".repeat(200).as_str());
        assert!(v.into_result().is_ok());
    }
}
