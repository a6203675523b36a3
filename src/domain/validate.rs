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

    /// An ID: not empty, at most 200 characters, no control characters.
    pub fn id(&mut self, field: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            self.add(field, "must not be empty");
        } else {
            self.text(field, value, MAX_LEN);
        }
        self
    }

    /// A name: 1 to 200 characters, not only white space, no control characters.
    pub fn name(&mut self, field: &str, value: &str) -> &mut Self {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else {
            self.text(field, value, MAX_LEN);
        }
        self
    }

    /// Free text that people read (a description, a label, a metadata entry): at most `max` characters and no
    /// control characters. PostgreSQL cannot store NUL in text at all, and a line break or an escape sequence in
    /// a title would forge lines in logs and consoles, so both stores refuse them alike.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters (NUL, line breaks, tabs, escapes)");
        } else if value.chars().nth(max).is_some() {
            self.add(field, format!("must be at most {max} characters"));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::InvalidArgument(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Violations) -> Vec<String> {
        match v.into_result() {
            Err(DomainError::InvalidArgument(found)) => found.into_iter().map(|f| f.field).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn reports_every_bad_field() {
        let mut v = Violations::new();
        v.id("projectId", "").id("appId", &"x".repeat(201)).name("name", "  ");
        assert_eq!(fields(v), ["projectId", "appId", "name"]);
    }

    #[test]
    fn accepts_the_limits() {
        let mut v = Violations::new();
        v.id("id", &"7".repeat(200)).name("name", "é".repeat(200).as_str()).text("d", "", 10);
        assert!(v.into_result().is_ok());
    }

    #[test]
    fn control_characters_are_refused_everywhere() {
        for bad in ["a\0b", "line\nbreak", "tab\there", "esc\u{1b}[31m", "del\u{7f}", "c1\u{85}"] {
            let mut v = Violations::new();
            v.id("id", bad).name("name", bad).text("description", bad, MAX_LEN);
            assert_eq!(fields(v), ["id", "name", "description"], "{bad:?}");
        }
        let mut v = Violations::new();
        v.name("name", "Zürich – 東京 ✓").text("description", "spaces are fine", MAX_LEN);
        assert!(v.into_result().is_ok());
    }
}
