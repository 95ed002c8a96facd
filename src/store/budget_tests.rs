//! The budget row's decisions, without a database.

use super::*;

fn request(want: u32, rate: u32, burst: u32) -> ReserveRequest<'static> {
    ReserveRequest {
        instance_id: "a",
        want,
        rate_per_second: rate,
        burst,
        late_slack_us: 0,
        probe_lease_us: 30 * US,
        fresh: false,
    }
}

/// Replica "a"'s request after the API rejected the key (1846): a minute, ended by a probe.
fn key_pause() -> PauseRequest<'static> {
    PauseRequest {
        instance_id: "a",
        reason: AnswerClass::KeyRejected,
        wait_us: 60 * US,
        probe: true,
        http_status: Some(401),
        api_code: Some(1846),
        tolerance_us: 0,
    }
}

fn slots(r: Reservation) -> Vec<i64> {
    match r {
        Reservation::Slots { at_us, .. } => at_us,
        other => panic!("not slots: {other:?}"),
    }
}

/// Every one-second window of the send times holds at most rate + burst.
fn busiest_second(times: &[i64]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    (0..sorted.len())
        .map(|i| sorted[i..].iter().take_while(|t| **t < sorted[i] + US).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn an_idle_budget_gives_its_burst_at_once_then_paces() {
    let mut row = BudgetRow {
        now_us: 100 * US,
        ..Default::default()
    };
    let at = slots(row.decide_reservation(&request(12, 10, 5)));
    assert_eq!(&at[..5], &[100 * US; 5], "{at:?}");
    assert_eq!(at[5] - at[4], US / 10);
    assert_eq!(at[11] - at[10], US / 10);
}

#[test]
fn many_replicas_reserving_in_turn_stay_within_rate_plus_burst_in_every_second() {
    // 12 replicas asking one send time each, as fast as they can, for 10 s: 6/s, burst 6.
    let mut row = BudgetRow::default();
    let mut sent = Vec::new();
    let mut now = 1_000 * US;
    while now < 1_010 * US {
        for replica in 0..12 {
            row.now_us = now + replica;
            let at = slots(row.decide_reservation(&request(1, 6, 6)));
            // A replica waits for its send time; it asks again only after sending.
            sent.extend(at.iter().copied().filter(|t| *t < 1_010 * US));
        }
        now += US / 20;
    }
    let busiest = busiest_second(&sent);
    assert!(busiest <= 12, "busiest second {busiest} > 6 + 6");
    let mean = sent.len() as f64 / 10.0;
    assert!(mean >= 5.0, "the budget was not used: {mean}/s");
}

#[test]
fn a_pause_hands_out_nothing_then_one_probe_then_slots_after_success() {
    let mut row = BudgetRow {
        now_us: 10 * US,
        ..Default::default()
    };
    let pause = key_pause();
    assert!(row.decide_pause(&pause));
    assert!(!row.decide_pause(&pause), "a second report is not news");
    row.now_us = 20 * US;
    assert!(matches!(
        row.decide_reservation(&request(5, 10, 5)),
        Reservation::Paused(_)
    ));
    row.now_us = 71 * US;
    let mut b = request(5, 10, 5);
    b.instance_id = "b";
    assert!(matches!(row.decide_reservation(&b), Reservation::Probe { .. }));
    assert!(
        matches!(row.decide_reservation(&request(5, 10, 5)), Reservation::Paused(p) if p.probing),
        "a second probe went while the first was out"
    );
    // A fresh process (perhaps with a new key) probes at once, the probe out or not.
    let mut fresh = request(5, 10, 5);
    fresh.fresh = true;
    assert!(matches!(row.decide_reservation(&fresh), Reservation::Probe { .. }));
    // The probe's replica died: after its lease, another may probe.
    row.now_us = 102 * US;
    assert!(matches!(
        row.decide_reservation(&request(5, 10, 5)),
        Reservation::Probe { .. }
    ));
}

#[test]
fn a_milder_pause_does_not_replace_a_rejected_key() {
    let mut row = BudgetRow::default();
    let key = key_pause();
    row.decide_pause(&key);
    row.decide_pause(&PauseRequest {
        reason: AnswerClass::RateLimited,
        wait_us: 5 * US,
        probe: false,
        ..key
    });
    let pause = row.pause().expect("paused");
    assert_eq!(pause.reason, "key_rejected");
    assert!(pause.probe);
    assert_eq!(pause.until, time(60 * US));
}

#[test]
fn a_429_pause_ends_by_itself_and_resumes_paced() {
    let mut row = BudgetRow::default();
    row.decide_pause(&PauseRequest {
        instance_id: "a",
        reason: AnswerClass::RateLimited,
        wait_us: 2 * US,
        probe: false,
        http_status: Some(429),
        api_code: None,
        tolerance_us: US * 4 / 10,
    });
    row.now_us = US;
    assert!(matches!(
        row.decide_reservation(&request(3, 10, 5)),
        Reservation::Paused(_)
    ));
    // At the end of the window, paced from there: no burst on top of the API's limit.
    row.now_us = 2 * US;
    let at = slots(row.decide_reservation(&request(3, 10, 5)));
    assert_eq!(at, vec![2 * US, 2 * US + US / 10, 2 * US + 2 * US / 10]);
    assert!(row.pause().is_none());
}

#[test]
fn the_minute_counters_roll_over() {
    let mut row = BudgetRow {
        now_us: 60 * US,
        ..Default::default()
    };
    row.decide_reservation(&request(3, 1000, 1000));
    row.now_us = 125 * US;
    row.decide_reservation(&request(2, 1000, 1000));
    assert_eq!(row.report().used_this_minute, 2);
    assert_eq!(row.report().used_last_minute, 3);
    row.now_us = 185 * US;
    assert_eq!(row.report().used_last_minute, 2);
}
