//! Decoding stored events (domain/events.rs): every projection rebuild and every command reads them back, and a
//! PostgreSQL database may be shared by several keymint versions. A payload of the wrong shape is an error, and an
//! event that decodes is written back as a payload that decodes to the same event, of the same type.
#![no_main]

use keymint::domain::Event;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 16] = [
    "org.added",
    "project.added",
    "project.removed",
    "app.added",
    "app.updated",
    "app.token.revoked",
    "app.key.added",
    "app.key.removed",
    "app.removed",
    "credential.added",
    "apikey.created",
    "apikey.updated",
    "apikey.rolled",
    "apikey.deleted",
    "signing_key.added",
    "app.exploded",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the event type; the rest is the payload.
    let Some((&pick, payload)) = data.split_first() else { return };
    let Ok(payload) = std::str::from_utf8(payload) else { return };
    let event_type = TYPES[usize::from(pick) % TYPES.len()];
    match Event::decode(event_type, Event::VERSION, payload) {
        Ok(event) => {
            assert_eq!(event.event_type(), event_type);
            let written = event.to_payload();
            assert!(
                matches!(serde_json::from_str(&written), Ok(serde_json::Value::Object(_))),
                "{written} is not a JSON object"
            );
            match Event::decode(event_type, Event::VERSION, &written) {
                Ok(again) => assert_eq!(again, event, "{written}"),
                Err(e) => panic!("the payload written for {event_type} does not read back: {e}"),
            }
            // Writing is deterministic: the stored form of an event is one text.
            assert_eq!(
                Event::decode(event_type, Event::VERSION, &written).map(|e| e.to_payload()).ok(),
                Some(written)
            );
        }
        Err(error) => {
            assert_eq!(error.event_type, event_type);
            let _ = error.to_string();
        }
    }
});
