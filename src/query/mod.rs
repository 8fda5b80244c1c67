//! Queries over the projection: history pages, record counts, performance metrics.
//!
//! Pure functions of the view and a "now" passed in, so tests can pin the clock. Nothing here
//! knows HTTP; the handlers in `http/` shape the answers.

mod counts;
mod history;
mod metrics;

pub use counts::{average_processing_time, record_counts, record_counts_of, RecordCounts};
pub use history::{
    history, position_of, CursorKey, HistoryPage, HistoryQuery, Position, HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX,
};
pub use metrics::{bucket_seconds, metrics, parse_time_range, Latency, Metrics, SeriesBucket};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_open_only_as_sealed_and_show_no_ordinal() {
        let key = CursorKey::new([1; 32]);
        let p = fixture();
        let page = history(
            &p,
            &HistoryQuery {
                limit: 1,
                ..HistoryQuery::default()
            },
        );
        let position = page.next.expect("more than one record");
        let cursor = key.seal(position);
        assert_eq!(key.open(&cursor), Some(position));
        assert_eq!(key.seal(position), cursor, "stable across calls");
        // Another key (another data directory's secret) does not open it.
        assert_eq!(CursorKey::new([2; 32]).open(&cursor), None);
        // Every single changed character is refused, as are other lengths and cases.
        for i in 0..cursor.len() {
            let mut forged = cursor.clone().into_bytes();
            forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(key.open(std::str::from_utf8(&forged).unwrap()), None, "{i}");
        }
        assert_eq!(key.open(&cursor[1..]), None);
        assert_eq!(key.open(&format!("{cursor}00")), None);
        assert_eq!(key.open(&cursor.to_uppercase()), None);
        assert_eq!(
            key.open("1.41da48be98100000.0"),
            None,
            "the old clear-text form"
        );
        // Two positions that differ only in the ordinal give cursors with nothing in common
        // that would order them.
        let other = key.seal(
            history(
                &p,
                &HistoryQuery {
                    limit: 2,
                    ..HistoryQuery::default()
                },
            )
            .next
            .unwrap(),
        );
        assert_ne!(other, cursor);
    }
    use crate::event::{Action, StoredEvent};
    use crate::projector::{Projection, Status};
    use crate::scope::Scope;

    /// Folds `(interaction, mcp, action, timestamp)` events with seqs in order.
    fn projection(events: &[(&str, &str, Action, f64)]) -> Projection {
        let mut projection = Projection::new();
        for (i, &(id, mcp, action, timestamp)) in events.iter().enumerate() {
            projection.apply(&StoredEvent {
                seq: i as u64 + 1,
                write_index: 0,
                received_at_us: (i as u64 + 1) * 1_000_000,
                key_id: [0; 8],
                action,
                timestamp,
                interaction_id: id,
                mcp_id: mcp,
                event_id: None,
                body: "{}",
            });
        }
        projection
    }

    fn ids(projection: &Projection, page: &HistoryPage) -> Vec<String> {
        page.ordinals
            .iter()
            .map(|&o| projection.interaction_id(projection.record(o)).to_owned())
            .collect()
    }

    fn fixture() -> Projection {
        use Action::*;
        projection(&[
            ("a", "m1", Start, 100.0),
            ("b", "m2", Start, 300.0),
            ("c", "m1", Start, 200.0),
            ("a", "m1", Complete, 101.5),
            ("b", "m2", Error, 304.0),
            ("d", "m1", Progress, 50.0), // orphan
            ("e", "m1", Start, 400.0),
            ("c", "m1", Cancelled, 210.0),
        ])
    }

    #[test]
    fn history_is_newest_start_first_then_orphans() {
        let p = fixture();
        let q = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["e", "b", "c", "a", "d"]);
        let q = HistoryQuery {
            limit: 10,
            mcp_id: Some("m1".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["e", "c", "a", "d"]);
        let q = HistoryQuery {
            limit: 10,
            status: Some(Status::Completed),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["a"]);
        let q = HistoryQuery {
            limit: 10,
            since: Some(150.0),
            until: Some(350.0),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["b", "c"]);
        let q = HistoryQuery {
            limit: 10,
            mcp_id: Some("nobody".into()),
            ..HistoryQuery::default()
        };
        assert!(history(&p, &q).ordinals.is_empty());
        let q = HistoryQuery {
            limit: 2,
            offset: 1,
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["b", "c"]);
    }

    #[test]
    fn cursors_walk_everything_once_with_and_without_filters() {
        let p = fixture();
        let key = CursorKey::new([7; 32]);
        for query in [
            HistoryQuery {
                limit: 1,
                ..HistoryQuery::default()
            },
            HistoryQuery {
                limit: 2,
                mcp_id: Some("m1".into()),
                ..HistoryQuery::default()
            },
            HistoryQuery {
                limit: 1,
                since: Some(1.0),
                ..HistoryQuery::default()
            },
        ] {
            let everything = history(
                &p,
                &HistoryQuery {
                    limit: 1000,
                    ..query.clone()
                },
            )
            .ordinals;
            let mut walked = Vec::new();
            let mut after = None;
            loop {
                let page = history(
                    &p,
                    &HistoryQuery {
                        after,
                        ..query.clone()
                    },
                );
                walked.extend(page.ordinals);
                match page.next {
                    Some(next) => after = Some(key.open(&key.seal(next)).unwrap()),
                    None => break,
                }
            }
            assert_eq!(walked, everything, "{query:?}");
        }
    }

    #[test]
    fn counts_and_stale_records() {
        let p = fixture();
        let counts = record_counts(&p, 100_000_000, 1_000_000);
        assert_eq!(counts.total, 5);
        assert_eq!(
            (counts.completed, counts.failed, counts.cancelled),
            (1, 1, 1)
        );
        assert_eq!(counts.active, 2); // d in progress (orphan), e started
        assert_eq!(counts.orphan, 1);
        // d (no start) was received at 6 s; e started at 400 s by its own timestamp.
        assert_eq!(counts.stale, 1, "at 100 s only d is older than 1 s");
        assert_eq!(record_counts(&p, 12_000_000, 5_500_000).stale, 1);
        assert_eq!(
            record_counts(&p, 500_000_000, 50_000_000).stale,
            2,
            "at 500 s e's start (400 s) is older than 50 s, whenever it arrived"
        );
        assert_eq!(average_processing_time(&p), Some((1.5 + 4.0) / 2.0));
    }

    #[test]
    fn metrics_over_a_range() {
        let p = fixture();
        let m = metrics(&p, 500.0, 500, Scope::All);
        assert_eq!(m.total_interactions, 3);
        assert_eq!((m.completed, m.failed, m.cancelled), (1, 1, 1));
        assert!((m.success_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.latency.min, Some(1.5));
        assert_eq!(m.latency.max, Some(4.0));
        assert_eq!(m.latency.avg, Some(2.75));
        assert_eq!(m.bucket_seconds, 60);
        assert_eq!(
            m.series
                .iter()
                .map(|b| b.completed + b.failed + b.cancelled)
                .sum::<u64>(),
            3
        );
        let only_m2 = metrics(&p, 500.0, 500, Scope::Only("m2"));
        assert_eq!((only_m2.total_interactions, only_m2.failed), (1, 1));
        let recent = metrics(&p, 500.0, 250, Scope::All);
        assert_eq!(recent.total_interactions, 1, "only b started after 250");
    }

    /// Roll-ups, bitmap walks and scans all agree with counting record by record.
    #[test]
    fn every_metrics_path_agrees_with_brute_force() {
        use Action::*;
        let mut events = Vec::new();
        let names: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
        let now = 1_763_900_000.0;
        for (i, name) in names.iter().enumerate() {
            // Spread over 40 days, at odd offsets so hour edges are crossed.
            let start = now - 40.0 * 86_400.0 + i as f64 * 5_799.3;
            let mcp = ["m0", "m1", "m2"][i % 3];
            let end = [Complete, Error, Cancelled, Complete][i % 4];
            events.push((name.as_str(), mcp, Start, start));
            if i % 7 != 0 {
                events.push((
                    name.as_str(),
                    mcp,
                    end,
                    start + (i % 13) as f64 * 0.7 + 0.01,
                ));
            }
        }
        let p = projection(&events);
        for (range, mcp) in [
            (30 * 86_400, None),
            (7 * 86_400, None),
            (86_400, None),
            (3600, None),
            (6 * 3600, None),
            (30 * 86_400, Some("m1")),
            (5 * 3600, Some("m2")),
        ] {
            let scope = mcp.map_or(Scope::All, Scope::Only);
            let m = metrics(&p, now, range, scope);
            let finished: Vec<&crate::projector::Record> = p
                .records()
                .filter(|r| {
                    r.start_time()
                        .is_some_and(|s| now - range as f64 <= s && s <= now)
                })
                .filter(|r| mcp.is_none_or(|name| p.mcp_name(r.mcp()) == name))
                .filter(|r| !r.status().is_active())
                .collect();
            let count = |s: Status| finished.iter().filter(|r| r.status() == s).count() as u64;
            assert_eq!(
                (m.completed, m.failed, m.cancelled),
                (
                    count(Status::Completed),
                    count(Status::Failed),
                    count(Status::Cancelled)
                ),
                "{range} {mcp:?}"
            );
            let times: Vec<f64> = finished
                .iter()
                .filter(|r| r.status() != Status::Cancelled)
                .filter_map(|r| r.processing_time())
                .collect();
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if times.is_empty() {
                assert_eq!(
                    (m.latency.min, m.latency.max, m.latency.avg),
                    (None, None, None)
                );
            } else {
                assert_eq!(m.latency.min, Some(min), "{range} {mcp:?}");
                assert_eq!(m.latency.max, Some(max), "{range} {mcp:?}");
                let avg = times.iter().sum::<f64>() / times.len() as f64;
                assert!(
                    (m.latency.avg.unwrap() - avg).abs() < 1e-9,
                    "{range} {mcp:?}"
                );
            }
            for bucket in &m.series {
                let end = bucket.start + m.bucket_seconds as f64;
                let here = finished
                    .iter()
                    .filter(|r| {
                        let s = r.start_time().unwrap();
                        bucket.start <= s && s < end
                    })
                    .count() as u64;
                assert_eq!(
                    bucket.completed + bucket.failed + bucket.cancelled,
                    here,
                    "{range} {mcp:?} bucket {}",
                    bucket.start
                );
            }
        }
    }

    #[test]
    fn time_ranges() {
        assert_eq!(parse_time_range("1h"), Some(3600));
        assert_eq!(parse_time_range("24h"), Some(86_400));
        assert_eq!(parse_time_range("7d"), Some(604_800));
        assert_eq!(parse_time_range("30d"), Some(2_592_000));
        assert_eq!(parse_time_range("90s"), Some(90));
        assert_eq!(parse_time_range("15m"), Some(900));
        for bad in [
            "",
            "h",
            "0h",
            "1w",
            "1.5h",
            "-1h",
            "01h",
            "24",
            "1hh",
            "99999999999d",
        ] {
            assert_eq!(parse_time_range(bad), None, "{bad}");
        }
        assert_eq!(bucket_seconds(3600), 60);
        assert_eq!(bucket_seconds(86_400), 3600);
        assert_eq!(bucket_seconds(2_592_000), 21_600);
    }
}
