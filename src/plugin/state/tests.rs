use std::time::Duration;

use super::local::{LocalStore, ENTRY_OVERHEAD, SWEEP_EVERY};
use super::types::{Bounds, StateError};

fn store(max_entries: u64, max_bytes: usize) -> LocalStore {
    LocalStore::new(Bounds {
        max_entries,
        max_bytes,
        max_value: 1000,
    })
}

#[test]
fn values_expire_after_their_ttl_and_deletes_say_whether_a_key_was_there() {
    let s = store(10, 10_000);
    s.set("a", b"1", Some(Duration::from_millis(30))).unwrap();
    s.set("b", b"2", None).unwrap();
    assert_eq!(s.get("a").as_deref(), Some(&b"1"[..]));
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(s.get("a"), None, "expired");
    assert_eq!(s.get("b").as_deref(), Some(&b"2"[..]), "no TTL: kept");
    assert!(s.delete("b"));
    assert!(!s.delete("b"));
    assert_eq!(s.usage(), (0, 0), "every byte given back");
}

#[test]
fn compare_and_swap_changes_only_the_expected_value() {
    let s = store(10, 10_000);
    assert!(
        s.compare_and_swap("k", None, Some(b"1"), None).unwrap(),
        "absent → 1"
    );
    assert!(
        !s.compare_and_swap("k", None, Some(b"2"), None).unwrap(),
        "not absent"
    );
    assert!(!s
        .compare_and_swap("k", Some(b"0"), Some(b"2"), None)
        .unwrap());
    assert!(s
        .compare_and_swap("k", Some(b"1"), Some(b"2"), None)
        .unwrap());
    assert_eq!(s.get("k").as_deref(), Some(&b"2"[..]));
    assert!(
        s.compare_and_swap("k", Some(b"2"), None, None).unwrap(),
        "swap to absent"
    );
    assert_eq!(s.get("k"), None);
    s.set("t", b"x", Some(Duration::from_millis(1))).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        s.compare_and_swap("t", None, Some(b"y"), None).unwrap(),
        "an expired key counts as absent"
    );
}

#[test]
fn racing_swaps_from_one_value_have_exactly_one_winner() {
    let s = std::sync::Arc::new(store(10, 10_000));
    let mut counted = 0u64;
    for _ in 0..200 {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || loop {
                    let cur = s.get("n").unwrap_or_else(|| b"0".to_vec());
                    let n: u64 = std::str::from_utf8(&cur).unwrap().parse().unwrap();
                    let next = (n + 1).to_string();
                    let expected = (n > 0).then_some(cur.as_slice());
                    if s.compare_and_swap("n", expected, Some(next.as_bytes()), None)
                        .unwrap()
                    {
                        return;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        counted += 4;
    }
    let n = String::from_utf8(s.get("n").unwrap()).unwrap();
    assert_eq!(n, counted.to_string(), "no increment lost");
}

#[test]
fn the_bounds_refuse_what_does_not_fit_and_expired_entries_make_room() {
    let s = store(3, 10_000);
    for k in ["a", "b", "c"] {
        s.set(k, b"v", Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(
        s.set("d", b"v", None),
        Err(StateError::Full),
        "three keys at most"
    );
    s.set("a", b"w", None).unwrap(); // replacing is not a new key
    std::thread::sleep(Duration::from_millis(30).max(SWEEP_EVERY));
    s.set("d", b"v", None).unwrap(); // "b" and "c" expired: swept
    assert_eq!(s.usage().0, 2);

    let small = store(100, 2 * (ENTRY_OVERHEAD + 1 + 500));
    small.set("x", &[0; 500], None).unwrap();
    small.set("y", &[0; 500], None).unwrap();
    assert_eq!(
        small.set("z", &[0; 10], None),
        Err(StateError::Full),
        "bytes"
    );
    assert_eq!(
        small.set("x", &[0; 501], None),
        Err(StateError::Full),
        "growing"
    );
    small.set("x", &[0; 10], None).unwrap(); // shrinking always fits
    assert!(matches!(
        small.set("x", &[0; 1001], None),
        Err(StateError::TooLarge(_))
    ));
    let long_key = "k".repeat(257);
    assert!(matches!(
        small.set(&long_key, b"", None),
        Err(StateError::TooLarge(_))
    ));
}
