//! The store conformance suite: the same behaviour of `EventStore`, checked on SQLite and on PostgreSQL.

use std::{future::Future, sync::Arc};

use keymint::{
    domain::{
        AggregateType, Event, Timestamp,
        api_key::{Origin, SecretRef, Settings},
        events::{CredentialRole, KeyAlgorithm, KeyType},
    },
    store::{
        ApiKeyCursor, ApiKeyQuery, Append, CredentialRow, EventRange, EventStore, Listed, Page,
        RecordedEvent, StoreError, UsageDelta,
    },
};
use tokio::sync::Barrier;

use crate::helpers::{Db, FreshDb, on_both_databases};

type Store = Arc<dyn EventStore>;

const CREATOR: &str = "user-conformance";
const T0: i64 = 1_764_000_000_000_000;
/// The expiration every test key gets.
const KEY_EXPIRES: i64 = T0 + 86_400_000_000;

fn at(n: i64) -> Timestamp {
    Timestamp(T0 + n)
}

/// An append by `CREATOR` at `at(0)`; tests change other fields with struct update syntax.
fn append<'a>(
    aggregate_type: AggregateType,
    id: &'a str,
    owner: &'a str,
    expected_sequence: u64,
    events: Vec<Event>,
) -> Append<'a> {
    Append {
        aggregate_type,
        aggregate_id: id,
        resource_owner: owner,
        creator: CREATOR,
        created_at: at(0),
        expected_sequence,
        events,
    }
}

fn project_added(name: &str) -> Event {
    Event::ProjectAdded { name: name.into() }
}

fn app_added(project_id: &str, name: &str) -> Event {
    Event::AppAdded {
        project_id: project_id.into(),
        name: name.into(),
        client_id: client_id(project_id, name),
        allowed_scopes: vec![],
    }
}

fn client_id(project_id: &str, name: &str) -> String {
    format!("{name}@{project_id}")
}

fn key_added(key_id: &str) -> Event {
    Event::AppKeyAdded {
        key_id: key_id.into(),
        key_type: KeyType::Json,
        expiration: KEY_EXPIRES,
        public_key: public_key(key_id),
        algorithm: KeyAlgorithm::Rsa,
        supplied: false,
    }
}

fn public_key(key_id: &str) -> String {
    format!("-----BEGIN PUBLIC KEY-----\n{key_id}\n-----END PUBLIC KEY-----\n")
}

fn page(offset: u64, limit: u32, asc: bool) -> Page {
    Page { offset, limit, asc }
}

async fn write(store: &Store, append: Append<'_>) -> Vec<RecordedEvent> {
    store.append(append).await.expect("append")
}

async fn assert_conflict(store: &Store, append: Append<'_>) {
    let result = store.append(append).await;
    assert!(matches!(result, Err(StoreError::Conflict)), "expected a conflict, got {result:?}");
}

async fn position(store: &Store) -> u64 {
    store.position().await.expect("position")
}

async fn add_org(store: &Store, id: &str, name: &str) -> Vec<RecordedEvent> {
    write(store, append(AggregateType::Org, id, id, 0, vec![Event::OrgAdded { name: name.into() }])).await
}

/// Adds a project created at `at(n)`.
async fn add_project(store: &Store, org: &str, id: &str, name: &str, n: i64) -> Vec<RecordedEvent> {
    let add = append(AggregateType::Project, id, org, 0, vec![project_added(name)]);
    write(store, Append { created_at: at(n), ..add }).await
}

async fn add_app(store: &Store, org: &str, project: &str, id: &str, name: &str) -> Vec<RecordedEvent> {
    write(store, append(AggregateType::App, id, org, 0, vec![app_added(project, name)])).await
}

/// Adds a key to an app at sequence `expected`, at `at(n)`.
async fn add_key(
    store: &Store,
    org: &str,
    app: &str,
    expected: u64,
    key: &str,
    n: i64,
) -> Vec<RecordedEvent> {
    let add = append(AggregateType::App, app, org, expected, vec![key_added(key)]);
    write(store, Append { created_at: at(n), ..add }).await
}

/// An org with one project holding one app (the app at sequence 1).
async fn seed_app(store: &Store, org: &str, project: &str, app: &str) {
    add_org(store, org, &format!("{org} name")).await;
    add_project(store, org, project, &format!("{project} name"), 0).await;
    add_app(store, org, project, app, "web").await;
}

fn sequences(events: &[RecordedEvent]) -> Vec<i64> {
    events.iter().map(|e| e.sequence).collect()
}

/// Checks a list holding exactly `expected` (IDs in creation order): both orders, paging and the total.
async fn assert_lists_in_creation_order<T, Fut>(
    list: impl Fn(Page) -> Fut,
    id_of: fn(&T) -> String,
    expected: &[&str],
) where
    Fut: Future<Output = Result<Listed<T>, StoreError>>,
{
    let n = expected.len();
    let mut reversed = expected.to_vec();
    reversed.reverse();
    let cases: [(Page, &[&str]); 6] = [
        (page(0, 100, true), expected),
        (page(0, 100, false), &reversed),
        (page(1, 2, true), &expected[1..3]),
        (page(1, 2, false), &reversed[1..3]),
        (page(n as u64 - 1, 2, true), &expected[n - 1..]),
        (page(n as u64, 2, true), &[]),
    ];
    for (page, want) in cases {
        let listed = list(page).await.expect("list");
        let ids: Vec<String> = listed.items.iter().map(id_of).collect();
        assert_eq!(ids, want, "items of {page:?}");
        assert_eq!(listed.total, n as u64, "total of {page:?}");
    }
}

on_both_databases!(fresh_store_is_empty_until_the_first_append, fresh_store_is_empty_until_the_first_append);
async fn fresh_store_is_empty_until_the_first_append(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    assert!(store.is_empty().await.expect("is_empty"));
    assert_eq!(position(&store).await, 0);

    add_org(&store, "org-empty", "Empty Inc").await;
    let recorded = add_project(&store, "org-empty", "proj-empty", "first", 1).await;
    assert!(!store.is_empty().await.expect("is_empty"));
    let last = recorded.last().expect("one event");
    assert_eq!(position(&store).await, u64::try_from(last.position).expect("positive position"));
    fresh.drop_database().await;
}

on_both_databases!(
    one_append_of_several_events_gets_consecutive_sequences,
    one_append_of_several_events_gets_consecutive_sequences
);
async fn one_append_of_several_events_gets_consecutive_sequences(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let events = vec![
        app_added("proj-seq", "web"),
        key_added("key-seq-1"),
        key_added("key-seq-2"),
        Event::AppKeyRemoved { key_id: "key-seq-1".into() },
    ];
    let add = append(AggregateType::App, "app-seq", "org-seq", 0, events.clone());
    let recorded = write(&store, Append { created_at: at(7), ..add }).await;

    assert_eq!(sequences(&recorded), [1, 2, 3, 4]);
    assert!(recorded.windows(2).all(|pair| pair[0].position < pair[1].position), "positions increase");
    let loaded = store.load(AggregateType::App, "app-seq").await.expect("load");
    assert_eq!(loaded, recorded);
    for (event, stored) in events.iter().zip(&loaded) {
        assert_eq!(&stored.event().expect("decodes"), event);
        assert_eq!(stored.event_type, event.event_type());
        assert_eq!(stored.event_version, Event::VERSION);
        assert_eq!((stored.aggregate_type.as_str(), stored.aggregate_id.as_str()), ("app", "app-seq"));
        assert_eq!((stored.resource_owner.as_str(), stored.creator.as_str()), ("org-seq", CREATOR));
        assert_eq!(stored.created_at, at(7).micros());
    }
    assert!(store.load(AggregateType::Project, "app-seq").await.expect("load").is_empty(), "types are apart");
    fresh.drop_database().await;
}

on_both_databases!(
    stale_expected_sequence_is_a_conflict_and_writes_nothing,
    stale_expected_sequence_is_a_conflict_and_writes_nothing
);
async fn stale_expected_sequence_is_a_conflict_and_writes_nothing(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    seed_app(&store, "org-stale", "proj-stale", "app-stale").await;
    add_key(&store, "org-stale", "app-stale", 1, "key-stale-1", 1).await;
    add_key(&store, "org-stale", "app-stale", 2, "key-stale-2", 2).await;
    let before = store.load(AggregateType::App, "app-stale").await.expect("load");
    let position_before = position(&store).await;

    assert_conflict(
        &store,
        append(AggregateType::App, "app-stale", "org-stale", 0, vec![app_added("p", "x")]),
    )
    .await;
    for expected in [1, 2] {
        let stale =
            append(AggregateType::App, "app-stale", "org-stale", expected, vec![key_added("key-late")]);
        assert_conflict(&store, stale).await;
    }

    assert_eq!(store.load(AggregateType::App, "app-stale").await.expect("load"), before);
    assert_eq!(position(&store).await, position_before);
    let late = store.app_key("org-stale", "proj-stale", "app-stale", "key-late").await.expect("app_key");
    assert_eq!(late, None);
    let app = store.app("org-stale", "proj-stale", "app-stale").await.expect("app").expect("app row");
    assert_eq!(app.details.sequence, 3);
    fresh.drop_database().await;
}

on_both_databases!(
    a_failed_multi_event_append_writes_none_of_its_events,
    a_failed_multi_event_append_writes_none_of_its_events
);
async fn a_failed_multi_event_append_writes_none_of_its_events(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    add_org(&store, "org-atomic", "Atomic Inc").await;
    add_project(&store, "org-atomic", "proj-taken", "taken", 0).await;
    let position_before = position(&store).await;

    // The first two events apply cleanly; only the third hits the (org, name) constraint.
    let events = vec![project_added("fresh"), Event::ProjectRemoved, project_added("taken")];
    assert_conflict(&store, append(AggregateType::Project, "proj-new", "org-atomic", 0, events)).await;

    assert!(store.load(AggregateType::Project, "proj-new").await.expect("load").is_empty());
    assert_eq!(position(&store).await, position_before);
    assert_eq!(store.project_by_name("org-atomic", "fresh").await.expect("project_by_name"), None);
    let taken = store.project_by_name("org-atomic", "taken").await.expect("project_by_name");
    assert_eq!(taken.map(|p| p.id).as_deref(), Some("proj-taken"));
    fresh.drop_database().await;
}

on_both_databases!(
    racing_writers_on_two_handles_let_exactly_one_win,
    racing_writers_on_two_handles_let_exactly_one_win
);
async fn racing_writers_on_two_handles_let_exactly_one_win(db: Db) {
    const WRITERS: usize = 16;
    let mut fresh = FreshDb::create(&db).await;
    // Two handles on one database, as two keymint processes would have.
    let handles = [fresh.open_store().await, fresh.open_store().await];
    seed_app(&handles[0], "org-race", "proj-race", "app-race").await;

    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier) = (handles[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                let key = format!("key-race-{i}");
                barrier.wait().await;
                store
                    .append(append(AggregateType::App, "app-race", "org-race", 1, vec![key_added(&key)]))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.expect("writer task") {
            Ok(recorded) => {
                won += 1;
                assert_eq!(sequences(&recorded), [2]);
            }
            Err(StoreError::Conflict) => {}
            Err(other) => panic!("a lost race must be a conflict, got {other:?}"),
        }
    }

    assert_eq!(won, 1);
    for store in &handles {
        assert_eq!(sequences(&store.load(AggregateType::App, "app-race").await.expect("load")), [1, 2]);
        let keys = store
            .app_keys("org-race", "proj-race", "app-race", page(0, 100, true), true)
            .await
            .expect("keys");
        assert_eq!((keys.items.len(), keys.total), (1, 1));
    }
    fresh.drop_database().await;
}

on_both_databases!(
    orgs_projects_and_apps_are_readable_right_after_their_append,
    orgs_projects_and_apps_are_readable_right_after_their_append
);
async fn orgs_projects_and_apps_are_readable_right_after_their_append(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let (org, project, app) = ("org-rm", "proj-rm", "app-rm");

    add_org(&store, org, "Read Models Inc").await;
    let row = store.org(org).await.expect("org").expect("org row");
    assert_eq!(
        (row.id.as_str(), row.name.as_str(), row.details.org_id.as_str()),
        (org, "Read Models Inc", org)
    );
    assert_eq!((row.details.sequence, row.details.created_at, row.details.changed_at), (1, T0, T0));
    assert_eq!(store.org_by_name("Read Models Inc").await.expect("org_by_name"), Some(row));
    assert_eq!(store.org("org-missing").await.expect("org"), None);

    add_project(&store, org, project, "billing", 3).await;
    let row = store.project(org, project).await.expect("project").expect("project row");
    assert_eq!((row.id.as_str(), row.name.as_str(), row.details.org_id.as_str()), (project, "billing", org));
    assert_eq!((row.details.sequence, row.details.created_at), (1, at(3).micros()));
    assert_eq!(store.project_by_name(org, "billing").await.expect("project_by_name"), Some(row));
    assert_eq!(store.project("other-org", project).await.expect("project"), None);
    assert_eq!(store.project_by_name("other-org", "billing").await.expect("project_by_name"), None);

    add_app(&store, org, project, app, "web").await;
    let row = store.app(org, project, app).await.expect("app").expect("app row");
    assert_eq!((row.id.as_str(), row.project_id.as_str(), row.name.as_str()), (app, project, "web"));
    assert_eq!((row.client_id.clone(), row.details.org_id.as_str()), (client_id(project, "web"), org));
    assert_eq!(store.app_by_name(project, "web").await.expect("app_by_name"), Some(row));
    assert_eq!(store.app("other-org", project, app).await.expect("app"), None);
    assert_eq!(store.app(org, "proj-other", app).await.expect("app"), None);
    fresh.drop_database().await;
}

on_both_databases!(
    app_key_events_add_and_remove_keys_and_touch_the_app,
    app_key_events_add_and_remove_keys_and_touch_the_app
);
async fn app_key_events_add_and_remove_keys_and_touch_the_app(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let (org, project, app) = ("org-keys", "proj-keys", "app-keys");
    seed_app(&store, org, project, app).await;

    add_key(&store, org, app, 1, "key-1", 5).await;
    let key = store.app_key(org, project, app, "key-1").await.expect("app_key").expect("key row");
    assert_eq!((key.id.as_str(), key.app_id.as_str(), key.key_type), ("key-1", app, 1));
    assert_eq!(key.expires_at, KEY_EXPIRES);
    let stored = store.public_key(app, "key-1").await.expect("public_key");
    assert_eq!(stored, Some(public_key("key-1")));
    assert_eq!(
        (key.details.org_id.as_str(), key.details.sequence, key.details.created_at),
        (org, 2, at(5).micros())
    );
    let row = store.app(org, project, app).await.expect("app").expect("app row");
    assert_eq!(
        (row.details.sequence, row.details.created_at, row.details.changed_at),
        (2, T0, at(5).micros())
    );
    assert_eq!(store.app_key("other-org", project, app, "key-1").await.expect("app_key"), None);

    add_key(&store, org, app, 2, "key-2", 6).await;
    let remove =
        append(AggregateType::App, app, org, 3, vec![Event::AppKeyRemoved { key_id: "key-1".into() }]);
    write(&store, Append { created_at: at(7), ..remove }).await;
    assert_eq!(store.app_key(org, project, app, "key-1").await.expect("app_key"), None);
    assert!(store.app_key(org, project, app, "key-2").await.expect("app_key").is_some(), "other keys stay");
    let row = store.app(org, project, app).await.expect("app").expect("app row");
    assert_eq!((row.details.sequence, row.details.changed_at), (4, at(7).micros()));
    fresh.drop_database().await;
}

on_both_databases!(
    removing_an_app_or_project_removes_what_it_contains,
    removing_an_app_or_project_removes_what_it_contains
);
async fn removing_an_app_or_project_removes_what_it_contains(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let (org, project) = ("org-rm", "proj-rm");
    seed_app(&store, org, project, "app-gone").await;
    add_app(&store, org, project, "app-kept", "kept").await;
    add_key(&store, org, "app-gone", 1, "key-gone", 1).await;
    add_key(&store, org, "app-kept", 1, "key-kept", 1).await;
    // A project elsewhere must survive both removals.
    add_project(&store, org, "proj-other", "other", 0).await;
    add_app(&store, org, "proj-other", "app-other", "web").await;
    // Totals are counts kept beside the rows: they must follow every removal.
    let totals = async |store: &Store| {
        let all = page(0, 100, true);
        (
            store.projects(org, all).await.expect("projects").total,
            store.apps(org, project, all).await.expect("apps").total,
            store.app_keys(org, project, "app-kept", all, false).await.expect("keys").total,
        )
    };
    assert_eq!(totals(&store).await, (2, 2, 1));

    let remove_app = Event::AppRemoved { project_id: project.into() };
    write(&store, append(AggregateType::App, "app-gone", org, 2, vec![remove_app])).await;
    assert_eq!(store.app(org, project, "app-gone").await.expect("app"), None);
    assert_eq!(store.app_by_name(project, "web").await.expect("app_by_name"), None);
    assert_eq!(store.app_key(org, project, "app-gone", "key-gone").await.expect("app_key"), None);
    assert!(store.app(org, project, "app-kept").await.expect("app").is_some(), "sibling app stays");
    assert!(store.app_key(org, project, "app-kept", "key-kept").await.expect("app_key").is_some());
    assert_eq!(totals(&store).await, (2, 1, 1));

    write(&store, append(AggregateType::Project, project, org, 1, vec![Event::ProjectRemoved])).await;
    assert_eq!(store.project(org, project).await.expect("project"), None);
    assert_eq!(store.project_by_name(org, &format!("{project} name")).await.expect("project_by_name"), None);
    assert_eq!(store.app(org, project, "app-kept").await.expect("app"), None);
    assert_eq!(store.app_key(org, project, "app-kept", "key-kept").await.expect("app_key"), None);
    assert_eq!(store.apps(org, project, page(0, 100, true)).await.expect("apps").total, 0);
    assert_eq!(totals(&store).await, (1, 0, 0));

    assert!(store.org(org).await.expect("org").is_some());
    assert!(store.project(org, "proj-other").await.expect("project").is_some());
    assert!(store.app(org, "proj-other", "app-other").await.expect("app").is_some());
    // History stays in the log after removal.
    assert_eq!(sequences(&store.load(AggregateType::App, "app-gone").await.expect("load")), [1, 2, 3]);
    fresh.drop_database().await;
}

on_both_databases!(project_names_are_unique_within_an_org_only, project_names_are_unique_within_an_org_only);
async fn project_names_are_unique_within_an_org_only(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    add_org(&store, "org-a", "A").await;
    add_org(&store, "org-b", "B").await;
    add_project(&store, "org-a", "proj-a1", "billing", 0).await;
    let position_before = position(&store).await;

    assert_conflict(
        &store,
        append(AggregateType::Project, "proj-a2", "org-a", 0, vec![project_added("billing")]),
    )
    .await;
    assert!(store.load(AggregateType::Project, "proj-a2").await.expect("load").is_empty());
    assert_eq!(position(&store).await, position_before);

    add_project(&store, "org-b", "proj-b1", "billing", 0).await;
    let in_a = store.project_by_name("org-a", "billing").await.expect("project_by_name");
    let in_b = store.project_by_name("org-b", "billing").await.expect("project_by_name");
    assert_eq!(
        (in_a.map(|p| p.id).as_deref(), in_b.map(|p| p.id).as_deref()),
        (Some("proj-a1"), Some("proj-b1"))
    );
    fresh.drop_database().await;
}

on_both_databases!(org_and_app_names_are_unique_too, org_and_app_names_are_unique_too);
async fn org_and_app_names_are_unique_too(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    seed_app(&store, "org-u", "proj-u", "app-u1").await;

    let same_org_name = vec![Event::OrgAdded { name: "org-u name".into() }];
    assert_conflict(&store, append(AggregateType::Org, "org-u2", "org-u2", 0, same_org_name)).await;
    assert_conflict(
        &store,
        append(AggregateType::App, "app-u2", "org-u", 0, vec![app_added("proj-u", "web")]),
    )
    .await;
    assert!(store.load(AggregateType::App, "app-u2").await.expect("load").is_empty());

    add_project(&store, "org-u", "proj-u2", "second", 0).await;
    add_app(&store, "org-u", "proj-u2", "app-u3", "web").await;
    fresh.drop_database().await;
}

on_both_databases!(
    project_lists_page_in_creation_order_and_count_every_row,
    project_lists_page_in_creation_order_and_count_every_row
);
async fn project_lists_page_in_creation_order_and_count_every_row(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    add_org(&store, "org-list", "Lists Inc").await;
    // Appended out of creation order, so that the order can only come from created_at.
    for n in [3, 0, 4, 1, 2] {
        add_project(&store, "org-list", &format!("proj-{n}"), &format!("project {n}"), 10 + n).await;
    }
    add_project(&store, "org-elsewhere", "proj-elsewhere", "project 0", 0).await;

    let expected = ["proj-0", "proj-1", "proj-2", "proj-3", "proj-4"];
    assert_lists_in_creation_order(|page| store.projects("org-list", page), |p| p.id.clone(), &expected)
        .await;
    fresh.drop_database().await;
}

on_both_databases!(
    app_key_lists_page_in_creation_order_and_count_every_row,
    app_key_lists_page_in_creation_order_and_count_every_row
);
async fn app_key_lists_page_in_creation_order_and_count_every_row(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let (org, project, app) = ("org-klist", "proj-klist", "app-klist");
    seed_app(&store, org, project, app).await;
    add_app(&store, org, project, "app-klist-other", "other").await;
    add_key(&store, org, "app-klist-other", 1, "key-other", 0).await;
    for (expected, n) in (1..).zip([2, 0, 3, 1]) {
        add_key(&store, org, app, expected, &format!("key-{n}"), 20 + n).await;
    }

    let want = ["key-0", "key-1", "key-2", "key-3"];
    assert_lists_in_creation_order(
        |page| store.app_keys(org, project, app, page, true),
        |k| k.id.clone(),
        &want,
    )
    .await;
    // Without the public key (KEY_VIEW_BASIC) the same page, every other column alike.
    let full = store.app_keys(org, project, app, page(0, 100, true), true).await.expect("full page");
    let basic = store.app_keys(org, project, app, page(0, 100, true), false).await.expect("basic page");
    assert_eq!((basic.total, basic.items.len()), (full.total, full.items.len()));
    for (basic, full) in basic.items.iter().zip(&full.items) {
        assert!(!full.public_key.is_empty(), "a full page carries the public key");
        assert_eq!(basic.public_key, "", "a basic page carries no public key");
        let (id, algorithm, expires_at) = (&full.id, full.algorithm, full.expires_at);
        assert_eq!((&basic.id, basic.algorithm, basic.expires_at), (id, algorithm, expires_at));
        assert_eq!((basic.supplied, basic.details.sequence), (full.supplied, full.details.sequence));
    }
    fresh.drop_database().await;
}

on_both_databases!(
    event_ranges_read_forward_after_and_backward_before_a_sequence,
    event_ranges_read_forward_after_and_backward_before_a_sequence
);
async fn event_ranges_read_forward_after_and_backward_before_a_sequence(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let events = ["key-r1", "key-r2", "key-r3", "key-r4"].map(key_added);
    let events = [vec![app_added("proj-range", "web")], events.to_vec()].concat();
    write(&store, append(AggregateType::App, "app-range", "org-range", 0, events)).await;
    add_app(&store, "org-range", "proj-range", "app-range-other", "other").await;

    let cases: [(u64, u32, bool, &[i64]); 9] = [
        (0, 10, true, &[1, 2, 3, 4, 5]),
        (2, 2, true, &[3, 4]),
        (4, 10, true, &[5]),
        (5, 10, true, &[]),
        (0, 10, false, &[5, 4, 3, 2, 1]),
        (0, 2, false, &[5, 4]),
        (4, 2, false, &[3, 2]),
        (2, 10, false, &[1]),
        (1, 10, false, &[]),
    ];
    for (from_sequence, limit, asc, want) in cases {
        let range = EventRange { from_sequence, limit, asc };
        let read = store.events(AggregateType::App, "app-range", range).await.expect("events");
        assert_eq!(sequences(&read), want, "{range:?}");
        assert!(read.iter().all(|e| e.aggregate_id == "app-range"), "only the asked aggregate: {range:?}");
    }
    fresh.drop_database().await;
}

on_both_databases!(credentials_are_found_by_token_hash, credentials_are_found_by_token_hash);
async fn credentials_are_found_by_token_hash(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let credential =
        |hash: &str| Event::CredentialAdded { token_hash: hash.into(), role: CredentialRole::InstanceAdmin };
    write(&store, append(AggregateType::Credential, "cred-1", "org-cred", 0, vec![credential("hash-1")]))
        .await;

    let found = store.credential("hash-1").await.expect("credential");
    let want =
        CredentialRow { id: "cred-1".into(), org_id: "org-cred".into(), role: "instance_admin".into() };
    assert_eq!(found, Some(want));
    assert_eq!(store.credential("hash-unknown").await.expect("credential"), None);
    // A token hash names one credential only.
    assert_conflict(
        &store,
        append(AggregateType::Credential, "cred-2", "org-cred", 0, vec![credential("hash-1")]),
    )
    .await;
    fresh.drop_database().await;
}

on_both_databases!(rebuilt_projections_equal_the_live_ones, rebuilt_projections_equal_the_live_ones);
async fn rebuilt_projections_equal_the_live_ones(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let (org, project) = ("org-rb", "proj-rb");
    let credential =
        Event::CredentialAdded { token_hash: "hash-rb".into(), role: CredentialRole::InstanceAdmin };
    let mut recorded = [
        add_org(&store, org, "Rebuild Inc").await,
        add_project(&store, org, project, "kept", 1).await,
        add_project(&store, org, "proj-rb-gone", "gone", 2).await,
        add_app(&store, org, project, "app-rb-1", "one").await,
        add_app(&store, org, project, "app-rb-2", "two").await,
        add_app(&store, org, "proj-rb-gone", "app-rb-3", "three").await,
        add_key(&store, org, "app-rb-1", 1, "key-rb-1", 3).await,
        add_key(&store, org, "app-rb-1", 2, "key-rb-2", 4).await,
        add_key(&store, org, "app-rb-2", 1, "key-rb-3", 5).await,
        add_key(&store, org, "app-rb-3", 1, "key-rb-4", 6).await,
        write(&store, append(AggregateType::Credential, "cred-rb", org, 0, vec![credential])).await,
    ]
    .concat()
    .len();
    let removals = [
        append(
            AggregateType::App,
            "app-rb-1",
            org,
            3,
            vec![Event::AppKeyRemoved { key_id: "key-rb-1".into() }],
        ),
        append(
            AggregateType::App,
            "app-rb-2",
            org,
            2,
            vec![Event::AppRemoved { project_id: project.into() }],
        ),
        append(AggregateType::Project, "proj-rb-gone", org, 1, vec![Event::ProjectRemoved]),
    ];
    for (n, removal) in (10..).zip(removals) {
        recorded += write(&store, Append { created_at: at(n), ..removal }).await.len();
    }

    let live = store.projection_snapshot().await.expect("snapshot");
    assert!(live.iter().any(|line| line.contains("key-rb-2")), "the snapshot shows rows: {live:?}");
    assert_eq!(store.rebuild_projections().await.expect("rebuild"), recorded as u64);
    assert_eq!(store.projection_snapshot().await.expect("snapshot"), live);
    // A rebuild is repeatable, and appends carry on after it.
    assert_eq!(store.rebuild_projections().await.expect("rebuild"), recorded as u64);
    assert_eq!(store.projection_snapshot().await.expect("snapshot"), live);
    add_key(&store, org, "app-rb-1", 4, "key-rb-5", 20).await;
    assert!(store.app_key(org, project, "app-rb-1", "key-rb-5").await.expect("app_key").is_some());
    fresh.drop_database().await;
}

fn api_key_created(n: u32) -> Event {
    Event::ApiKeyCreated {
        origin: Origin::default(),
        settings: Settings {
            title: format!("key {n}"),
            scopes: vec!["keys:read".into()],
            ..Settings::default()
        },
        secret: secret(&format!("hash-{n}")),
    }
}

fn secret(hash: &str) -> SecretRef {
    SecretRef { secret_hash: hash.into(), prefix: format!("km_live_{hash}"), last_four: "abcd".into() }
}

on_both_databases!(
    api_key_secrets_are_found_through_rolls_and_revocation,
    api_key_secrets_are_found_through_rolls_and_revocation
);
async fn api_key_secrets_are_found_through_rolls_and_revocation(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    write(&store, append(AggregateType::ApiKey, "ak-1", "org-a", 0, vec![api_key_created(1)])).await;
    let found = store.api_key_by_secret("hash-1").await.expect("lookup").expect("found");
    assert_eq!(
        (found.key.id.as_str(), found.key.status.as_str(), found.secret_expires_at),
        ("ak-1", "active", None)
    );
    assert_eq!(found.key.created_by, CREATOR);

    let rolled = Event::ApiKeyRolled { secret: secret("hash-1b"), old_secret_expires_at: T0 + 5 };
    write(
        &store,
        Append { created_at: at(1), ..append(AggregateType::ApiKey, "ak-1", "org-a", 1, vec![rolled]) },
    )
    .await;
    let old = store.api_key_by_secret("hash-1").await.expect("lookup").expect("old secret");
    let new = store.api_key_by_secret("hash-1b").await.expect("lookup").expect("new secret");
    assert_eq!((old.secret_expires_at, new.secret_expires_at), (Some(T0 + 5), None));
    assert_eq!((new.key.prefix.as_str(), new.key.details.sequence), ("km_live_hash-1b", 2));

    write(
        &store,
        Append {
            created_at: at(2),
            ..append(AggregateType::ApiKey, "ak-1", "org-a", 2, vec![Event::ApiKeyDeleted])
        },
    )
    .await;
    let revoked = store.api_key("org-a", "ak-1").await.expect("read").expect("kept for audit");
    assert_eq!(
        (revoked.status.as_str(), revoked.deleted_at, revoked.details.changed_at),
        ("revoked", Some(T0 + 2), T0 + 2)
    );
    assert_eq!(store.api_key("org-b", "ak-1").await.expect("read"), None, "scoped by organization");
    assert_eq!(store.api_key_by_secret("hash-unknown").await.expect("lookup"), None);
    fresh.drop_database().await;
}

on_both_databases!(api_key_usage_adds_up_per_utc_day, api_key_usage_adds_up_per_utc_day);
async fn api_key_usage_adds_up_per_utc_day(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    write(&store, append(AggregateType::ApiKey, "ak-u", "org-a", 0, vec![api_key_created(7)])).await;
    let delta = |requests, denied, last_used_at, quota_day, quota_used| UsageDelta {
        key_id: "ak-u".into(),
        requests,
        denied,
        last_used_at,
        quota_day,
        quota_used,
    };
    let usage =
        |store: Store| async move { store.api_key("org-a", "ak-u").await.expect("read").expect("key").usage };
    assert_eq!(usage(store.clone()).await.total_requests, 0, "no usage before the first flush");
    store.record_usage(&[delta(3, 1, 50, 100, 3)]).await.expect("flush");
    store.record_usage(&[delta(2, 0, 40, 100, 2)]).await.expect("flush");
    let after = usage(store.clone()).await;
    // Counts add up; the last use is the latest either batch saw; the quota counts the same day on.
    assert_eq!(
        (after.total_requests, after.total_denied, after.last_used_at, after.quota_day, after.quota_count),
        (5, 1, 50, 100, 5)
    );
    // A later day starts the quota count over; a batch of an earlier day does not touch it.
    store.record_usage(&[delta(1, 0, 60, 101, 1)]).await.expect("flush");
    store.record_usage(&[delta(1, 0, 55, 100, 4)]).await.expect("flush");
    let after = usage(store.clone()).await;
    assert_eq!(
        (after.total_requests, after.last_used_at, after.quota_day, after.quota_count),
        (7, 60, 101, 1)
    );
    fresh.drop_database().await;
}

on_both_databases!(a_flush_of_many_keys_adds_up_for_each_of_them, a_flush_of_many_keys);
async fn a_flush_of_many_keys(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    // 1,201 keys: three statements of up to 500 rows. The first, one in the middle and the last are real keys.
    let watched = [0_u32, 777, 1_200];
    for n in watched {
        let id = format!("ak-many-{n}");
        write(&store, append(AggregateType::ApiKey, &id, "org-m", 0, vec![api_key_created(n)])).await;
    }
    let flush = |requests: u64, day: i64| -> Vec<UsageDelta> {
        (0..1_201_u32)
            .map(|n| UsageDelta {
                key_id: format!("ak-many-{n}"),
                requests: requests + u64::from(n),
                denied: 1,
                last_used_at: i64::from(n),
                quota_day: day,
                quota_used: 2,
            })
            .collect()
    };
    store.record_usage(&flush(10, 100)).await.expect("first flush: every row new");
    store.record_usage(&flush(5, 100)).await.expect("second flush: every row an update");
    for n in watched {
        let usage = store.api_key("org-m", &format!("ak-many-{n}")).await.expect("read").expect("key").usage;
        assert_eq!(
            (
                usage.total_requests,
                usage.total_denied,
                usage.last_used_at,
                usage.quota_day,
                usage.quota_count
            ),
            (15 + 2 * i64::from(n), 2, i64::from(n), 100, 4),
            "key {n}"
        );
    }
    fresh.drop_database().await;
}

on_both_databases!(api_key_pages_follow_cursors_and_filters, api_key_pages_follow_cursors_and_filters);
async fn api_key_pages_follow_cursors_and_filters(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    // Two keys share a creation time, so the ID breaks the tie.
    for (n, t) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4)] {
        let id = format!("ak-{n}");
        write(
            &store,
            Append {
                created_at: at(t),
                ..append(AggregateType::ApiKey, &id, "org-p", 0, vec![api_key_created(n)])
            },
        )
        .await;
    }
    write(&store, append(AggregateType::ApiKey, "ak-other", "org-q", 0, vec![api_key_created(9)])).await;
    write(
        &store,
        Append {
            created_at: at(5),
            ..append(AggregateType::ApiKey, "ak-4", "org-p", 1, vec![Event::ApiKeyDeleted])
        },
    )
    .await;
    let query = |limit, cursor| ApiKeyQuery { limit, cursor, status: None, app_id: None, environment: None };
    let ids = |rows: Vec<keymint::store::ApiKeyRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = ids(store.api_keys("org-p", &query(10, ApiKeyCursor::None)).await.expect("list"));
    assert_eq!(all, ["ak-5", "ak-3", "ak-2", "ak-1"], "newest first, revoked and other orgs' keys left out");
    let next =
        ids(store.api_keys("org-p", &query(2, ApiKeyCursor::After("ak-3".into()))).await.expect("list"));
    assert_eq!(next, ["ak-2", "ak-1"]);
    let previous =
        ids(store.api_keys("org-p", &query(1, ApiKeyCursor::Before("ak-2".into()))).await.expect("list"));
    assert_eq!(previous, ["ak-3"], "the page just before the cursor, newest first");
    let revoked = ApiKeyQuery { status: Some("revoked"), ..query(10, ApiKeyCursor::None) };
    assert_eq!(ids(store.api_keys("org-p", &revoked).await.expect("list")), ["ak-4"]);
    let live = ApiKeyQuery {
        environment: Some("live"),
        app_id: Some("none".into()),
        ..query(10, ApiKeyCursor::None)
    };
    assert!(store.api_keys("org-p", &live).await.expect("list").is_empty(), "no key belongs to app `none`");
    fresh.drop_database().await;
}

on_both_databases!(revoked_tokens_are_found_one_at_a_time_and_in_batches, revoked_tokens_in_batches);
async fn revoked_tokens_in_batches(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    seed_app(&store, "org-rev", "proj-rev", "app-rev").await;
    let revoke = |sequence, jti: &str| {
        let event = Event::AppTokenRevoked { jti: jti.into(), expires_at: T0 / 1_000_000 + 3_600 };
        append(AggregateType::App, "app-rev", "org-rev", sequence, vec![event])
    };
    write(&store, revoke(1, "jti-a")).await;
    write(&store, revoke(2, "jti-c")).await;

    let asked: Vec<String> = ["jti-a", "jti-b", "jti-c", "jti-a", "jti-d"].map(String::from).to_vec();
    let answers = store.tokens_revoked(&asked).await.expect("batch");
    assert_eq!(
        answers,
        [true, false, true, true, false],
        "in the order asked, a jti asked twice answered twice"
    );
    assert_eq!(store.tokens_revoked(&["jti-c".into()]).await.expect("one"), [true]);
    assert_eq!(store.tokens_revoked(&[]).await.expect("none"), Vec::<bool>::new());
    // A full batch of the service's size (64) in one statement.
    let many: Vec<String> = (0..64).map(|i| format!("jti-{i}")).chain(["jti-a".into()]).collect();
    let answers = store.tokens_revoked(&many).await.expect("many");
    assert_eq!(answers.iter().filter(|revoked| **revoked).count(), 1);
    assert!(answers[64]);
    fresh.drop_database().await;
}

/// SQLite only (PostgreSQL's checkpoints are its server's business): the one writer never stops a commit to
/// checkpoint; a connection beside it copies the log back into the database file on its own. A few keys write far
/// fewer log pages than SQLite's own threshold (1,000), so nothing else would copy them before the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_reach_the_database_file_beside_the_writer() {
    let fresh = FreshDb::create(&Db::Sqlite).await;
    let store = fresh.open_store().await;
    let file = fresh.data_dir().join("keymint.db");
    let size = || std::fs::metadata(&file).expect("database file").len();
    let before = size();
    seed_app(&store, "org-wal", "proj-wal", "app-wal").await;
    for n in 0..20_u64 {
        add_key(&store, "org-wal", "app-wal", 1 + n, &format!("key-wal-{n}"), n as i64).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {before} bytes: no checkpoint copied the log into it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.app_keys("org-wal", "proj-wal", "app-wal", page(0, 1, true), false).await.expect("list").total,
        20
    );
}
