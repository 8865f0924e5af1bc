//! `kafscale-broker ctl status|flush|drain|resume`: calls a running broker's
//! BrokerControl endpoint and prints the answer as text (or JSON with `--json`).
//! Exit status: 0 when the call succeeded and every partition is fine, 1 when
//! the call failed or a partition reports an error, 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use kafscale_proto::control::broker_control_client::BrokerControlClient;
use kafscale_proto::control::{
    DrainPartitionsRequest, GetStatusRequest, GetStatusResponse, PartitionOffsets,
    ResumePartitionsRequest, TopicPartitions, TriggerFlushRequest,
};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The broker's control endpoint (its KAFSCALE_CONTROL_ADDR).
    #[arg(long, env = "KAFSCALE_CONTROL_ADDR", default_value = "127.0.0.1:9094")]
    pub addr: String,
    /// Print the answer as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub op: CtlOp,
}

#[derive(Debug, Subcommand)]
pub enum CtlOp {
    /// Shards and partitions: offsets, unflushed bytes, upload queue, drain state.
    Status {
        /// Partitions to show: TOPIC (all its partitions) or TOPIC:P[,P...]; default all.
        partitions: Vec<String>,
    },
    /// Seal and upload the open segments now; prints the durable offsets.
    Flush {
        /// TOPIC or TOPIC:P[,P...]; default every loaded partition.
        partitions: Vec<String>,
        /// How long the broker waits for durability (default 30000).
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u32,
    },
    /// Stop taking writes (producers get NOT_LEADER_OR_FOLLOWER and retry), then
    /// flush; prints the final offsets.
    Drain {
        /// TOPIC or TOPIC:P[,P...]; default the whole broker.
        partitions: Vec<String>,
        /// How long the broker waits for durability (default 30000).
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u32,
    },
    /// Take writes again for drained partitions.
    Resume {
        /// TOPIC or TOPIC:P[,P...]; default every drained partition and a broker-wide drain.
        partitions: Vec<String>,
    },
}

/// A partition selection that does not parse (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("{arg:?}: {part:?} is not a partition number")]
    NotAPartition {
        /// The whole argument, e.g. `orders:1,x`.
        arg: String,
        /// The piece that is not a number, untrimmed.
        part: String,
    },
    #[error("{arg:?}: no topic name")]
    NoTopic { arg: String },
}

/// Why a `ctl` call failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("bad --addr {addr:?}: {source}")]
    BadAddr {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the control endpoint at {url}: {source}")]
    Unreachable {
        url: String,
        source: tonic::transport::Error,
    },
    /// The broker answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
}

/// Parses `TOPIC` or `TOPIC:P[,P...]` (Kafka topic names cannot contain `:`).
pub fn parse_selection(args: &[String]) -> Result<Vec<TopicPartitions>, SelectionError> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for a in args {
        let (topic, parts) = match a.split_once(':') {
            None => (a.as_str(), Vec::new()),
            Some((t, ps)) => {
                let parts = ps
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<i32>()
                            .map_err(|_| SelectionError::NotAPartition {
                                arg: a.clone(),
                                part: p.to_string(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (t, parts)
            }
        };
        if topic.is_empty() {
            return Err(SelectionError::NoTopic { arg: a.clone() });
        }
        out.push(TopicPartitions {
            topic: topic.to_string(),
            partitions: parts,
        });
    }
    Ok(out)
}

/// Lays out rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(|c| c.as_str()).collect()));
    }
    out
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn offset(o: i64) -> String {
    if o < 0 {
        "-".into()
    } else {
        o.to_string()
    }
}

pub fn status_text(s: &GetStatusResponse) -> String {
    let mut out = format!("broker {}  cluster {}\n\n", s.broker_id, s.cluster_id);
    let shards: Vec<Vec<String>> = s
        .shards
        .iter()
        .map(|sh| {
            vec![
                sh.shard.to_string(),
                sh.partitions.to_string(),
                sh.unflushed_bytes.to_string(),
                sh.upload_queue_depth.to_string(),
                sh.uploads_in_flight.to_string(),
                yes(sh.draining_all),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SHARD",
            "PARTITIONS",
            "UNFLUSHED-BYTES",
            "UPLOAD-QUEUE",
            "UPLOADING",
            "DRAINING-ALL",
        ],
        &shards,
    ));
    out.push('\n');
    let parts: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.shard.to_string(),
                offset(p.log_start_offset),
                offset(p.high_watermark),
                offset(p.log_end_offset),
                p.unflushed_bytes.to_string(),
                format!("{}/{}", p.upload_queue_segments, p.upload_queue_bytes),
                yes(p.draining),
                if p.loaded { "" } else { "not loaded" }.into(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TOPIC",
            "PARTITION",
            "SHARD",
            "LOG-START",
            "HIGH-WATERMARK",
            "LOG-END",
            "UNFLUSHED-BYTES",
            "UPLOAD-QUEUE(SEGS/BYTES)",
            "DRAINING",
            "NOTE",
        ],
        &parts,
    ));
    out
}

pub fn offsets_text(parts: &[PartitionOffsets]) -> String {
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                offset(p.log_start_offset),
                offset(p.high_watermark),
                offset(p.log_end_offset),
                if p.error.is_empty() {
                    "ok".into()
                } else {
                    p.error.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "LOG-START",
            "HIGH-WATERMARK",
            "LOG-END",
            "RESULT",
        ],
        &rows,
    )
}

fn print<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("kafscale-broker ctl: {e}"),
        }
    } else {
        print!("{}", text());
    }
}

fn errors(parts: &[PartitionOffsets]) -> bool {
    parts.iter().any(|p| !p.error.is_empty())
}

/// The endpoint URL for an address given as `host:port` or a full URL.
pub fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A parsed `ctl` command, ready to send.
enum Call {
    Status(GetStatusRequest),
    Flush(TriggerFlushRequest),
    Drain(DrainPartitionsRequest),
    Resume(ResumePartitionsRequest),
}

impl Call {
    fn parse(op: CtlOp) -> Result<Call, SelectionError> {
        Ok(match op {
            CtlOp::Status { partitions } => Call::Status(GetStatusRequest {
                topics: parse_selection(&partitions)?,
            }),
            CtlOp::Flush {
                partitions,
                timeout_ms,
            } => Call::Flush(TriggerFlushRequest {
                topics: parse_selection(&partitions)?,
                timeout_ms,
            }),
            CtlOp::Drain {
                partitions,
                timeout_ms,
            } => Call::Drain(DrainPartitionsRequest {
                topics: parse_selection(&partitions)?,
                timeout_ms,
            }),
            CtlOp::Resume { partitions } => Call::Resume(ResumePartitionsRequest {
                topics: parse_selection(&partitions)?,
            }),
        })
    }

    /// How long the broker may take to answer.
    fn deadline(&self) -> Duration {
        let wait = match self {
            Call::Flush(r) => r.timeout_ms,
            Call::Drain(r) => r.timeout_ms,
            _ => 0,
        };
        Duration::from_millis(wait as u64) + Duration::from_secs(30)
    }
}

async fn call(addr: &str, json: bool, call: Call) -> Result<bool, CtlError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url(addr))
        .map_err(|source| CtlError::BadAddr {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(call.deadline());
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| CtlError::Unreachable {
            url: url(addr),
            source,
        })?;
    let mut c = BrokerControlClient::new(channel);
    match call {
        Call::Status(req) => {
            let r = c.get_status(req).await?.into_inner();
            print(json, &r, || status_text(&r));
            Ok(true)
        }
        Call::Flush(req) => {
            let r = c.trigger_flush(req).await?.into_inner();
            print(json, &r, || offsets_text(&r.partitions));
            Ok(!errors(&r.partitions))
        }
        Call::Drain(req) => {
            let r = c.drain_partitions(req).await?.into_inner();
            print(json, &r, || offsets_text(&r.partitions));
            Ok(!errors(&r.partitions))
        }
        Call::Resume(req) => {
            let r = c.resume_partitions(req).await?.into_inner();
            print(json, &r, || {
                let mut s = String::new();
                if r.resumed_all {
                    s.push_str("the whole broker takes writes again\n");
                }
                s.push_str(&format!("{} partition(s) resumed\n", r.partitions.len()));
                if !r.partitions.is_empty() {
                    s.push_str(&offsets_text(&r.partitions));
                }
                s
            });
            Ok(true)
        }
    }
}

pub fn run(args: CtlArgs) -> ExitCode {
    let req = match Call::parse(args.op) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kafscale-broker ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kafscale-broker ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(call(&args.addr, args.json, req)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kafscale-broker ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        let s = parse_selection(&["orders".into(), "events:0,2".into(), "x:1".into()]).unwrap();
        assert_eq!(
            s.iter()
                .map(|t| (t.topic.as_str(), t.partitions.clone()))
                .collect::<Vec<_>>(),
            vec![("orders", vec![]), ("events", vec![0, 2]), ("x", vec![1])]
        );
        let e = parse_selection(&["a:1, b".into()]).unwrap_err();
        assert_eq!(
            e,
            SelectionError::NotAPartition {
                arg: "a:1, b".into(),
                part: " b".into()
            }
        );
        assert_eq!(e.to_string(), r#""a:1, b": " b" is not a partition number"#);
        let e = parse_selection(&[":1".into()]).unwrap_err();
        assert_eq!(e.to_string(), r#"":1": no topic name"#);
        assert!(parse_selection(&["a:".into()]).is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long-value".into(), "1".into()],
                vec!["x".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A           BB\nlong-value  1\nx           22\n");
    }

    #[test]
    fn offsets_show_errors_and_unknown_values() {
        let t = offsets_text(&[
            PartitionOffsets {
                topic: "t".into(),
                partition: 0,
                log_start_offset: 0,
                high_watermark: 5,
                log_end_offset: 5,
                error: String::new(),
            },
            PartitionOffsets {
                topic: "t".into(),
                partition: 1,
                log_start_offset: -1,
                high_watermark: -1,
                log_end_offset: -1,
                error: "the topic was deleted".into(),
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("t      0          0          5               5        ok"));
        assert!(lines[2].contains("-") && lines[2].ends_with("the topic was deleted"));
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url("127.0.0.1:9094"), "http://127.0.0.1:9094");
        assert_eq!(url("https://b:9094"), "https://b:9094");
    }
}
