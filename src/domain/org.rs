//! Organizations: the owners of everything else.

use super::{DomainError, Event, aggregate::Aggregate, validate::Violations};

#[derive(Debug, Default, Clone)]
pub struct Org {
    pub name: Option<String>,
}

impl Aggregate for Org {
    fn apply(&mut self, event: &Event) {
        if let Event::OrgAdded { name } = event {
            self.name = Some(name.clone());
        }
    }
}

impl Org {
    pub fn add(&self, name: &str) -> Result<Vec<Event>, DomainError> {
        let mut violations = Violations::new();
        violations.name("name", name);
        violations.into_result()?;
        if self.name.is_some() {
            return Err(DomainError::already_exists("ORG_ALREADY_EXISTS", "the organization exists"));
        }
        Ok(vec![Event::OrgAdded { name: name.trim().to_owned() }])
    }
}
