//! Command-line interface: one subcommand per measurement.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-bench",
    about = "Kafka-protocol load generator and benchmark harness (librdkafka)",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Produce messages; report throughput and send → acknowledgement latency.
    Produce(ProduceArgs),
    /// Read a topic; report throughput.
    Consume(ConsumeArgs),
    /// Produce and consume at once; report end-to-end latency (send → consumer).
    E2e(E2eArgs),
    /// A Kafka-protocol server that acknowledges every Produce and discards the
    /// data: the ceiling any broker can reach with the same client on this machine.
    Sink(SinkArgs),
    /// Draw latency versus throughput (SVG) from the suite's JSON-lines results.
    Plot(PlotArgs),
}

/// Options every client command shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Bootstrap address of any Kafka-compatible broker.
    #[arg(
        long,
        env = "KAFSCALE_BENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Print the result as one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// A librdkafka setting for every client of the run, as kcat's `-X`
    /// (e.g. `-X security.protocol=SSL -X ssl.ca.location=ca.pem`); repeatable,
    /// and it wins over the bench's own settings.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl Common {
    /// A librdkafka configuration for this run: the bootstrap address, `base`'s
    /// settings, then `-X`'s.
    pub fn client_config(
        &self,
        mut base: rdkafka::config::ClientConfig,
    ) -> rdkafka::config::ClientConfig {
        base.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.settings {
            base.set(k, v);
        }
        base
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Keys {
    /// No key: librdkafka spreads messages over partitions itself.
    None,
    /// A random 8-byte key per message.
    Random,
    /// An 8-byte counter (per producer) as key.
    #[value(alias = "seq")]
    Sequential,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Acks {
    /// Wait for the broker's durable acknowledgement (`acks=-1`).
    #[value(name = "all", alias = "-1")]
    All,
    #[value(name = "1")]
    One,
    /// Fire and forget: latency then measures the client's own queue only.
    #[value(name = "0")]
    Zero,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::One => "1",
            Acks::Zero => "0",
        }
    }
}

/// Compression codecs librdkafka has built in with this crate's features
/// (`zstd` would need the system library, so it is not offered).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// How a producer load is shaped (shared by `produce` and `e2e`).
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Partitions of the topic (created with this many if missing).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Bytes of each message's value.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    #[arg(long, value_enum, default_value_t = Keys::Random)]
    pub keys: Keys,
    /// Messages per second for all producers together; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many messages (all producers together).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, value_enum, default_value_t = Acks::All, allow_hyphen_values = true)]
    pub acks: Acks,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// librdkafka `batch.size` in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Independent producer clients, one thread each.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Where to start reading (for a group: when it has no committed offset).
    #[arg(long = "from", value_enum, default_value_t = StartFrom::Earliest)]
    pub from: StartFrom,
    /// Join this consumer group (subscribe) instead of assigning every partition.
    #[arg(long)]
    pub group: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
}

#[derive(Args, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,
    /// Seconds to keep consuming after the producers stop, for the last messages.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
}

#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on (port 0 = any free port, printed on stderr).
    #[arg(long, alias = "bootstrap", default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// host:port advertised in Metadata (default: the address a client connected to).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Partitions of topics that are not created explicitly.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the totals as JSON when stopping.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// JSON lines; those with a `series` field are drawn.
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "Produce latency versus throughput")]
    pub title: String,
}

impl Load {
    /// Refuses combinations that cannot produce a meaningful run.
    pub fn validate(&self, min_message_size: usize) -> Result<(), String> {
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if self.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        if self.message_size < min_message_size {
            return Err(format!(
                "--message-size must be at least {min_message_size} bytes"
            ));
        }
        // NaN is refused too: it is not greater than zero.
        if self.duration.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            && self.messages.is_none()
        {
            return Err("give a positive --duration or --messages".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kafscale-bench").chain(args.iter().copied()))
    }

    #[test]
    fn librdkafka_settings_win_over_the_bench_s_own() {
        let c = parse(&[
            "produce",
            "-X",
            "security.protocol=SSL",
            "-X",
            "acks=1",
            "-X",
            "sasl.password=a=b",
        ])
        .unwrap();
        let Cmd::Produce(a) = c.cmd else {
            panic!("not produce")
        };
        let mut base = rdkafka::config::ClientConfig::new();
        base.set("acks", "all");
        let cfg = a.common.client_config(base);
        assert_eq!(cfg.get("security.protocol"), Some("SSL"));
        assert_eq!(cfg.get("acks"), Some("1"));
        assert_eq!(cfg.get("sasl.password"), Some("a=b"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert!(parse(&["produce", "-X", "novalue"]).is_err());
        assert!(parse(&["produce", "-X", "=v"]).is_err());
    }

    #[test]
    fn produce_arguments() {
        let c = parse(&[
            "produce",
            "--bootstrap",
            "h:1",
            "--partitions",
            "64",
            "--message-size",
            "16384",
            "--acks",
            "1",
            "--rate",
            "5000",
            "--keys",
            "seq",
            "--compression",
            "lz4",
            "--producers",
            "3",
            "--messages",
            "700",
            "--json",
        ])
        .unwrap();
        let Cmd::Produce(a) = c.cmd else {
            panic!("not produce")
        };
        assert_eq!(a.common.bootstrap, "h:1");
        assert!(a.common.json);
        let l = a.load;
        assert_eq!(
            (
                l.partitions,
                l.message_size,
                l.rate,
                l.producers,
                l.messages
            ),
            (64, 16384, 5000, 3, Some(700))
        );
        assert_eq!(
            (l.acks, l.keys, l.compression),
            (Acks::One, Keys::Sequential, Compression::Lz4)
        );
        assert_eq!(l.acks.as_str(), "1");
    }

    #[test]
    fn defaults_and_aliases() {
        let Cmd::Produce(a) = parse(&["produce"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!(a.load.acks, Acks::All);
        assert_eq!(a.load.acks.as_str(), "all");
        assert_eq!(a.load.keys, Keys::Random);
        assert_eq!((a.load.partitions, a.load.message_size), (6, 1024));
        assert!(!a.common.json);
        let Cmd::Produce(a) = parse(&["produce", "--acks", "-1", "--keys", "none"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!((a.load.acks, a.load.keys), (Acks::All, Keys::None));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["produce", "--keys", "bogus"]).is_err());
        assert!(parse(&["produce", "--acks", "2"]).is_err());
        assert!(parse(&["produce", "--compression", "zstd"]).is_err());
        assert!(parse(&["produce", "--partitions", "x"]).is_err());
        assert!(parse(&["consume", "--from", "middle"]).is_err());
        assert!(parse(&["nonsense"]).is_err());
    }

    #[test]
    fn consume_e2e_sink_and_plot_arguments() {
        let Cmd::Consume(c) = parse(&["consume", "--from", "latest", "--group", "g1"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!(
            (c.from, c.group.as_deref()),
            (StartFrom::Latest, Some("g1"))
        );
        let Cmd::E2e(e) = parse(&["e2e", "--rate", "100", "--drain", "2", "--json"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!((e.load.rate, e.drain, e.common.json), (100, 2.0, true));
        // `--bootstrap` is accepted by every command, the sink included.
        let Cmd::Sink(s) = parse(&["sink", "--bootstrap", "127.0.0.1:0", "--partitions", "6"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!((s.listen.as_str(), s.partitions), ("127.0.0.1:0", 6));
        let Cmd::Plot(p) = parse(&["plot", "--results", "r.jsonl", "--out", "p.svg"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!(p.out, PathBuf::from("p.svg"));
    }

    #[test]
    fn load_validation() {
        let Cmd::E2e(e) = parse(&["e2e", "--message-size", "8"]).unwrap().cmd else {
            panic!()
        };
        assert!(e.load.validate(16).is_err());
        let Cmd::Produce(p) = parse(&["produce", "--producers", "0"]).unwrap().cmd else {
            panic!()
        };
        assert!(p.load.validate(0).is_err());
        let Cmd::Produce(p) = parse(&["produce", "--duration", "0", "--messages", "5"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert!(p.load.validate(0).is_ok());
    }
}
