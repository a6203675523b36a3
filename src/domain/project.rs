//! Projects: named groups of applications within an organization.

use super::{DomainError, Event, aggregate::Aggregate, validate::Violations};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Project {
    #[default]
    Absent,
    Active {
        name: String,
    },
    Removed,
}

impl Aggregate for Project {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::ProjectAdded { name } => *self = Project::Active { name: name.clone() },
            Event::ProjectRemoved => *self = Project::Removed,
            _ => {}
        }
    }
}

impl Project {
    pub fn add(&self, name: &str) -> Result<Vec<Event>, DomainError> {
        let mut violations = Violations::new();
        violations.name("name", name);
        violations.into_result()?;
        if *self != Project::Absent {
            return Err(DomainError::already_exists("PROJECT_ALREADY_EXISTS", "the project exists"));
        }
        Ok(vec![Event::ProjectAdded { name: name.trim().to_owned() }])
    }

    pub fn remove(&self, id: &str) -> Result<Vec<Event>, DomainError> {
        match self {
            Project::Active { .. } => Ok(vec![Event::ProjectRemoved]),
            _ => Err(not_found(id)),
        }
    }
}

pub fn not_found(id: &str) -> DomainError {
    DomainError::not_found("PROJECT_NOT_FOUND", format!("project {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::Loaded;

    #[test]
    fn a_removed_project_cannot_be_removed_again() {
        let project = Loaded::<Project>::replay(&[
            Event::ProjectAdded { name: "billing".into() },
            Event::ProjectRemoved,
        ]);
        assert_eq!(project.sequence, 2);
        assert!(matches!(project.state.remove("1"), Err(DomainError::NotFound { .. })));
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(
            Project::Absent.add("  billing ").ok(),
            Some(vec![Event::ProjectAdded { name: "billing".into() }])
        );
        assert!(matches!(Project::Absent.add(" "), Err(DomainError::InvalidArgument(_))));
    }
}
