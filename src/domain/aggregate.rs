//! Rebuilding an aggregate's state from its events.

use super::Event;

/// State that folds events, oldest first. `apply` never fails: events are facts, and rules are checked before
/// an event is written, not after.
pub trait Aggregate: Default {
    fn apply(&mut self, event: &Event);
}

/// An aggregate's state with the sequence of the last event folded into it (0 when it has none).
#[derive(Debug, Default, Clone)]
pub struct Loaded<S> {
    pub state: S,
    pub sequence: u64,
}

impl<S: Aggregate> Loaded<S> {
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut loaded = Loaded::<S>::default();
        for event in events {
            loaded.state.apply(event);
            loaded.sequence += 1;
        }
        loaded
    }
}
