//! `alloc_count` with its allocator installed (a test binary of its own: the allocator
//! is global, and no other test runs beside this one to add allocations of its own).

use hyperat::alloc_count::{Counting, count};

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

#[test]
fn counts_the_allocations_of_the_closure() {
    let (vecs, counted) = count(|| (1..=100).map(|n| vec![7u8; n]).collect::<Vec<_>>());
    let counted = counted.expect("the allocator is installed");
    // 100 vectors of 1..=100 bytes and the outer vector (collect may grow it).
    assert!(counted.count >= 101, "{counted:?}");
    assert!(counted.bytes >= 5050 + 100 * 24, "{counted:?}");
    drop(vecs);

    let (sum, quiet) = count(|| (1..=1000u64).sum::<u64>());
    assert_eq!(sum, 500_500);
    assert!(quiet.expect("installed").count <= 2, "{quiet:?}");

    let (_, outer) = count(|| {
        let (_, inner) = count(|| vec![0u8; 64]);
        assert_eq!(inner, None, "a count inside a count would mix the two");
    });
    assert!(outer.expect("installed").count >= 1);
}
