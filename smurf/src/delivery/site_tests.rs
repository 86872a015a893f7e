//! Tests of the site's limiters (`site.rs`), on a simulated clock.

use super::*;

use governor::clock::FakeRelativeClock;

/// Takes what the limiter allows at `now`, recording grants like `Site::acquire`.
fn take(slot: &mut Option<Paced<FakeRelativeClock>>, now: Instant) -> u32 {
    let mut got = 0;
    if let Some(paced) = slot.as_mut() {
        while paced.limiter.check().is_ok() {
            paced.last_grant = Some(now);
            got += 1;
        }
    }
    got
}

#[test]
fn rebuilding_often_neither_starves_nor_bursts() {
    // A slow site ramping up: its limiter is rebuilt every 100 ms, more often than its
    // interval (0.5 s and shrinking). The clock is simulated: no sleeping, same result on
    // any machine.
    let clock = FakeRelativeClock::default();
    let t0 = Instant::now();
    let mut now = t0;
    let mut slot = Some(Paced::with_clock(2.0, &clock));
    let mut granted = take(&mut slot, now);
    let mut rate = 2.0;
    for _ in 0..12 {
        clock.advance(Duration::from_millis(100));
        now += Duration::from_millis(100);
        rate *= 1.05;
        Paced::repace_with(&mut slot, Some(rate), now, &clock);
        granted += take(&mut slot, now);
    }
    // 1.2 s at 2 to 3.6/s: the first grant plus about three more, never a burst.
    assert!((3..=5).contains(&granted), "{granted} grants");
}

#[test]
fn a_rebuild_right_after_a_grant_starts_empty() {
    let clock = FakeRelativeClock::default();
    let now = Instant::now();
    let mut slot = Some(Paced::with_clock(10.0, &clock));
    assert_eq!(take(&mut slot, now), 1);
    // Rebuilt 10 ms after the grant for a rate whose interval is 50 ms: nothing yet.
    clock.advance(Duration::from_millis(10));
    let later = now + Duration::from_millis(10);
    Paced::repace_with(&mut slot, Some(20.0), later, &clock);
    assert_eq!(take(&mut slot, later), 0);
    clock.advance(Duration::from_millis(50));
    assert_eq!(take(&mut slot, later + Duration::from_millis(50)), 1);
}

#[test]
fn small_drifts_keep_the_limiter() {
    let clock = FakeRelativeClock::default();
    let mut slot = Some(Paced::with_clock(100.0, &clock));
    let before = slot.as_ref().map(|p| Arc::as_ptr(&p.limiter));
    Paced::repace_with(&mut slot, Some(101.0), Instant::now(), &clock);
    assert_eq!(slot.as_ref().map(|p| Arc::as_ptr(&p.limiter)), before);
    Paced::repace_with(&mut slot, None, Instant::now(), &clock);
    assert!(slot.is_none());
}
