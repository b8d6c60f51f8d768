//! `/metrics`: the node's counters, gauges and per-stream figures in the Prometheus text
//! format. Every metric is one row of the table in [`prometheus_text`]: its name, its help text
//! and where its value comes from.

use std::fmt::Write;

use crate::node_stats::Stats;
use crate::protocol::ErrorCode;
use crate::stream_stats::{Percentiles, StreamReport};

/// The Prometheus text exposition format.
pub(crate) fn prometheus_text(node: &str, stats: &Stats, streams: &[StreamReport]) -> String {
    let mut out = String::with_capacity(4096);
    let counters = [
        (
            "kadr_frames_received_total",
            "Messages received on frame channels.",
            stats.received.get(),
        ),
        (
            "kadr_frames_accepted_total",
            "Frames accepted.",
            stats.accepted.get(),
        ),
        (
            "kadr_frames_refused_total",
            "Messages refused with an error.",
            stats.errors.get(),
        ),
        (
            "kadr_frames_detected_total",
            "Frames published with detections.",
            stats.detected.get(),
        ),
        (
            "kadr_frames_dropped_total",
            "Frames dropped for lateness.",
            stats.dropped.get(),
        ),
        (
            "kadr_frames_failed_total",
            "Frames whose detection failed.",
            stats.failed.get(),
        ),
        (
            "kadr_frames_lost_total",
            "Frames with no result in time.",
            stats.lost.get(),
        ),
        (
            "kadr_frames_missing_total",
            "Sequence numbers never received.",
            stats.missing.get(),
        ),
        (
            "kadr_frames_superseded_total",
            "Live frames dropped because a newer frame of their stream was waiting.",
            stats.superseded.get(),
        ),
        (
            "kadr_frames_too_old_total",
            "Live frames dropped after waiting past live.max_wait_ms.",
            stats.too_old.get(),
        ),
        (
            "kadr_frames_redispatched_total",
            "Frames sent again after their detector was lost.",
            stats.redispatched.get(),
        ),
        (
            "kadr_late_results_total",
            "Results that came after their frame was accounted for.",
            stats.late_results.get(),
        ),
        (
            "kadr_inferences_total",
            "Frames this node's detectors finished.",
            stats.inferences.get(),
        ),
        (
            "kadr_detector_restarts_total",
            "Detectors restarted after a failure.",
            stats.detector_restarts.get(),
        ),
        (
            "kadr_ingress_restarts_total",
            "Times the source, dispatcher and sequencer were restarted after one failed.",
            stats.ingress_restarts.get(),
        ),
        (
            "kadr_pool_restarts_total",
            "Times the detector pool was restarted after it failed.",
            stats.pool_restarts.get(),
        ),
        (
            "kadr_parts_down",
            "Parts of the node down and being restarted now.",
            stats.parts_down.get(),
        ),
        (
            "kadr_results_fenced_total",
            "Results not published: another node held the source lease by then.",
            stats.fenced.get(),
        ),
        (
            "kadr_frames_resent_total",
            "Kept frames also sent to a second detector because the first stayed silent.",
            stats.resent.get(),
        ),
        (
            "kadr_results_already_published_total",
            "Results not published again: Redis had them already (a retried publish).",
            stats.already_published.get(),
        ),
        (
            "kadr_redis_state_refused_total",
            "Records in Redis that cannot be right (a stream's last-seq ahead of anything published), found and not believed.",
            stats.redis_state_refused.get(),
        ),
        (
            "kadr_frames_abandoned_total",
            "Accepted frames left past a far hole when their stream's numbering restarted.",
            stats.abandoned.get(),
        ),
        (
            "kadr_publish_errors_total",
            "Redis publishes that failed.",
            stats.publish_errors.get(),
        ),
        (
            "kadr_redis_outages_total",
            "Times the source found Redis unreachable (one per outage).",
            stats.redis_outages.get(),
        ),
        (
            "kadr_pubsub_disconnects_total",
            "Times Redis closed the source's subscription (see client-output-buffer-limit).",
            stats.pubsub_disconnects.get(),
        ),
        (
            "kadr_kafka_messages_total",
            "Messages read from Kafka's frames topic ([kafka]).",
            stats.kafka_messages.get(),
        ),
        (
            "kadr_kafka_unkeyed_total",
            "Kafka messages without a stream id as their key: let go (logged).",
            stats.kafka_unkeyed.get(),
        ),
        (
            "kadr_kafka_errors_total",
            "Errors reported by Kafka's client (a broker away, a topic missing).",
            stats.kafka_errors.get(),
        ),
        (
            "kadr_redis_down",
            "1 while the source cannot reach Redis.",
            stats.redis_down.get(),
        ),
        (
            "kadr_detect_fps",
            "Frames this node's detectors finished per second, over the last heartbeat.",
            stats.detect_fps_tenths.get() / 10,
        ),
        (
            "kadr_malformed_messages_total",
            "Messages from peers that could not be decoded.",
            stats.malformed.get(),
        ),
        (
            "kadr_streams_held",
            "Streams whose lease this node holds (cluster.stream_leases).",
            stats.streams_held.get(),
        ),
        (
            "kadr_frames_elsewhere_total",
            "Frames of streams another source node reads, left alone (cluster.stream_leases).",
            stats.frames_elsewhere.get(),
        ),
        (
            "kadr_cluster_handshakes_failed_total",
            "Connections to the cluster port closed during the cookie handshake (a wrong cookie, junk).",
            stats.cluster_handshakes_failed.get(),
        ),
        (
            "kadr_log_lines_left_out_total",
            "Repeated log lines of the cluster library left out (logged a few per kind every 10 s).",
            crate::log_budget::library_lines_left_out(),
        ),
        (
            "kadr_cluster_silent_sessions_closed_total",
            "Sessions with peers closed because no heartbeat came through them.",
            stats.silent_sessions_closed.get(),
        ),
        (
            "kadr_cluster_handshake_timeouts_total",
            "Connections to the cluster port closed for not authenticating in time.",
            stats.cluster_handshake_timeouts.get(),
        ),
        (
            "kadr_cluster_connections_refused_total",
            "Connections to the cluster port closed at accept: too many waiting to authenticate.",
            stats.cluster_connections_refused.get(),
        ),
        (
            "kadr_cluster_accept_errors_total",
            "Errors accepting on the cluster port (out of file descriptors).",
            stats.cluster_accept_errors.get(),
        ),
        (
            "kadr_frames_in_flight",
            "Frames this node's dispatcher has at detectors.",
            stats.dispatch_in_flight.get(),
        ),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {value}"
        );
    }
    let gauges: [(&str, &str, u64); 4] = [
        (
            "kadr_frames_queued",
            "Frames waiting for a detector.",
            stats.dispatch_queued.get(),
        ),
        (
            "kadr_detectors",
            "Detectors this node runs.",
            stats.detectors.get(),
        ),
        (
            "kadr_detectors_busy",
            "Detectors of this node working now.",
            stats.busy.get(),
        ),
        (
            "kadr_cluster_detectors",
            "Detectors in the cluster this node's dispatcher can use.",
            stats.cluster_detectors.get(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {value}"
        );
    }
    let _ = writeln!(out, "# HELP kadr_frames_refused_by_code_total Messages refused, by error code (only a few per code are logged).\n# TYPE kadr_frames_refused_by_code_total counter");
    for (code, n) in ErrorCode::ALL.iter().zip(&stats.errors_by_code) {
        let n = n.get();
        if n > 0 {
            let _ = writeln!(
                out,
                "kadr_frames_refused_by_code_total{{node=\"{node}\",code=\"{}\"}} {n}",
                code.as_str()
            );
        }
    }
    let _ = writeln!(out, "# HELP kadr_objects_detected_total Objects this node's detectors found, by class name.\n# TYPE kadr_objects_detected_total counter");
    for (class, n) in stats.objects.snapshot() {
        let _ = writeln!(
            out,
            "kadr_objects_detected_total{{node=\"{node}\",class=\"{}\"}} {n}",
            escape(&class)
        );
    }
    if !streams.is_empty() {
        let _ = writeln!(
            out,
            "# HELP kadr_stream_fps Detections published per second.\n# TYPE kadr_stream_fps gauge"
        );
        for s in streams {
            let _ = writeln!(
                out,
                "kadr_stream_fps{{node=\"{node}\",stream=\"{}\"}} {}",
                escape(&s.stream),
                s.fps
            );
        }
        type Field = fn(&StreamReport) -> &Option<Percentiles>;
        let quantiles: [(&str, &str, Field); 3] = [
            (
                "kadr_stream_latency_ms",
                "Capture to publication, recent frames.",
                |s| &s.latency_ms,
            ),
            (
                "kadr_stream_queued_ms",
                "Time recent frames waited in the node for a detector.",
                |s| &s.queued_ms,
            ),
            (
                "kadr_stream_detect_ms",
                "Time recent frames spent at a detector.",
                |s| &s.detect_ms,
            ),
        ];
        for (name, help, field) in quantiles {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in streams {
                if let Some(l) = field(s) {
                    for (q, v) in [("0.5", l.p50), ("0.95", l.p95), ("0.99", l.p99)] {
                        let _ = writeln!(
                            out,
                            "{name}{{node=\"{node}\",stream=\"{}\",quantile=\"{q}\"}} {v}",
                            escape(&s.stream)
                        );
                    }
                }
            }
        }
        let _ = writeln!(out, "# HELP kadr_stream_frames_total Frames per stream by outcome.\n# TYPE kadr_stream_frames_total counter");
        for s in streams {
            for (outcome, v) in [
                ("in", s.frames_in),
                ("detected", s.frames_out),
                ("dropped", s.dropped),
                ("failed", s.failed),
                ("lost", s.lost),
                ("missing", s.missing),
                ("refused", s.errors),
            ] {
                let _ = writeln!(out, "kadr_stream_frames_total{{node=\"{node}\",stream=\"{}\",outcome=\"{outcome}\"}} {v}", escape(&s.stream));
            }
        }
        analytics_metrics(&mut out, node, streams);
    }
    out
}

/// Line crossings (counters, per direction and class) and zone occupancy (gauges, per class)
/// of the streams with analytics, and entries into each zone.
fn analytics_metrics(out: &mut String, node: &str, streams: &[StreamReport]) {
    let with: Vec<(&str, &crate::analytics::Counts)> = streams
        .iter()
        .filter_map(|s| Some((s.stream.as_str(), &s.analytics.as_ref()?.counts)))
        .collect();
    if with.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP kadr_line_crossings_total Objects that crossed a stream's line, by direction and class id.\n# TYPE kadr_line_crossings_total counter");
    for (stream, counts) in &with {
        for (line, c) in &counts.lines {
            for (class, by) in &c.by_class {
                for (direction, v) in [("in", by.in_), ("out", by.out)] {
                    let _ = writeln!(out, "kadr_line_crossings_total{{node=\"{node}\",stream=\"{}\",line=\"{}\",direction=\"{direction}\",class_id=\"{class}\"}} {v}", escape(stream), escape(line));
                }
            }
        }
    }
    let _ = writeln!(out, "# HELP kadr_zone_objects Objects inside a stream's zone now, by class id.\n# TYPE kadr_zone_objects gauge");
    for (stream, counts) in &with {
        for (zone, c) in &counts.zones {
            for (class, v) in &c.inside_by_class {
                let _ = writeln!(out, "kadr_zone_objects{{node=\"{node}\",stream=\"{}\",zone=\"{}\",class_id=\"{class}\"}} {v}", escape(stream), escape(zone));
            }
        }
    }
    let _ = writeln!(out, "# HELP kadr_zone_entries_total Objects that entered a stream's zone.\n# TYPE kadr_zone_entries_total counter");
    for (stream, counts) in &with {
        for (zone, c) in &counts.zones {
            let _ = writeln!(
                out,
                "kadr_zone_entries_total{{node=\"{node}\",stream=\"{}\",zone=\"{}\"}} {}",
                escape(stream),
                escape(zone),
                c.entered
            );
        }
    }
}

/// Label values escape backslash, quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let stats = Stats::default();
        stats.detected.add(5);
        stats.refused(ErrorCode::BadMagic);
        stats.refused(ErrorCode::BadMagic);
        let streams = vec![StreamReport {
            stream: "cam\"1".into(),
            frames_in: 6,
            frames_out: 5,
            fps: 25.0,
            latency_ms: Some(crate::stream_stats::Percentiles {
                p50: 60.0,
                p95: 70.0,
                p99: 80.0,
            }),
            queued_ms: None,
            detect_ms: Some(crate::stream_stats::Percentiles {
                p50: 40.0,
                p95: 45.0,
                p99: 50.0,
            }),
            dropped: 1,
            failed: 0,
            lost: 0,
            missing: 0,
            errors: 0,
            late: 0,
            analytics: Some(crate::stream_stats::AnalyticsReport {
                config: Default::default(),
                counts: crate::analytics::Counts {
                    lines: [(
                        "gate".to_string(),
                        crate::analytics::LineCounts {
                            in_: 3,
                            out: 1,
                            by_class: [(2, crate::analytics::InOut { in_: 3, out: 1 })].into(),
                        },
                    )]
                    .into(),
                    zones: [(
                        "lot".to_string(),
                        crate::analytics::ZoneCounts {
                            inside: 2,
                            entered: 7,
                            inside_by_class: [(2, 2)].into(),
                        },
                    )]
                    .into(),
                },
            }),
        }];
        let person = |score| crate::protocol::Detection {
            class_id: 0,
            class: "person".into(),
            score,
            bbox: [0.0; 4],
            track_id: None,
        };
        stats.objects.add(&[person(0.9), person(0.8)]);
        let text = prometheus_text("n1", &stats, &streams);
        assert!(text.contains("kadr_objects_detected_total{node=\"n1\",class=\"person\"} 2\n"));
        assert!(text.contains("# TYPE kadr_frames_detected_total counter\nkadr_frames_detected_total{node=\"n1\"} 5\n"));
        assert!(text.contains(
            "kadr_stream_latency_ms{node=\"n1\",stream=\"cam\\\"1\",quantile=\"0.99\"} 80"
        ));
        assert!(text.contains(
            "kadr_stream_detect_ms{node=\"n1\",stream=\"cam\\\"1\",quantile=\"0.5\"} 40"
        ));
        assert!(
            !text.contains("kadr_stream_queued_ms{"),
            "none measured yet"
        );
        assert!(text.contains("kadr_frames_refused_total{node=\"n1\"} 2\n"));
        assert!(text.contains(
            "kadr_line_crossings_total{node=\"n1\",stream=\"cam\\\"1\",line=\"gate\",direction=\"out\",class_id=\"2\"} 1\n"
        ));
        assert!(text.contains(
            "kadr_zone_objects{node=\"n1\",stream=\"cam\\\"1\",zone=\"lot\",class_id=\"2\"} 2\n"
        ));
        assert!(text
            .contains("kadr_zone_entries_total{node=\"n1\",stream=\"cam\\\"1\",zone=\"lot\"} 7\n"));
        assert!(
            text.contains("kadr_frames_refused_by_code_total{node=\"n1\",code=\"bad_magic\"} 2\n")
        );
        assert!(
            !text.contains("code=\"bad_image\""),
            "codes never seen are left out"
        );
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
