//! What the presence tests of every broker share: listing, waiting for a listing, and the
//! scenario of two processes joining, leaving and dying.

use std::time::Duration;

use tower_sse_pubsub::broker::{Broker, Presence};

/// `presence`'s entries of `group`, sorted.
pub async fn listed(presence: &dyn Presence, group: &str) -> Vec<(String, String)> {
    let mut entries = presence.list(group).await.expect("list");
    entries.sort();
    entries
}

/// Polls `presence`'s list of `group` until `done` accepts it, at most ten seconds.
pub async fn wait_for_list(
    presence: &dyn Presence,
    group: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = listed(presence, group).await;
        if done(&entries) || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

/// Two processes' brokers `a` and `b` on one server, whose presence entries expire `expiry`
/// after their process's last heartbeat: each lists the entries of both (keys and values of any
/// text), a left or replaced entry shows at once, the heartbeat keeps entries past the expiry,
/// and once A is dropped without a word its entries drop out.
pub async fn every_process_lists_every_processs_entries<B: Broker>(
    broker_a: B,
    broker_b: &B,
    expiry: Duration,
) {
    let a = broker_a.presence().expect("the broker keeps a presence");
    let b = broker_b.presence().expect("the broker keeps a presence");
    assert_eq!(listed(b, "g").await, [], "nothing joined yet");
    a.join("g", "a1", "one").await.expect("join");
    a.join("g", "a2", "two").await.expect("join");
    b.join("g", "b1", "three").await.expect("join");
    b.join("other", "b2", "elsewhere").await.expect("join");
    // Keys and values of any text, not only what a broker's own names may hold.
    b.join("g", "/books/{id} ✓.*>:", "{\"a\": 1}")
        .await
        .expect("join");
    let odd = pair("/books/{id} ✓.*>:", "{\"a\": 1}");
    let all = vec![
        odd.clone(),
        pair("a1", "one"),
        pair("a2", "two"),
        pair("b1", "three"),
    ];
    assert_eq!(listed(a, "g").await, all);
    assert_eq!(
        listed(b, "g").await,
        all,
        "the same list from either process"
    );
    assert_eq!(listed(a, "other").await, [pair("b2", "elsewhere")]);

    a.leave("g", "a2").await.expect("leave");
    a.join("g", "a1", "one, changed").await.expect("replace");
    assert_eq!(
        listed(b, "g").await,
        [odd.clone(), pair("a1", "one, changed"), pair("b1", "three")]
    );

    // The heartbeat keeps entries past the expiry while the process lives...
    tokio::time::sleep(expiry * 2).await;
    assert_eq!(listed(b, "g").await.len(), 3, "renewed by the heartbeat");
    // ...and a process that stops without a word drops out within it.
    drop(broker_a);
    let left = wait_for_list(b, "g", |entries| entries.len() == 2).await;
    assert_eq!(left, [odd, pair("b1", "three")]);
}
