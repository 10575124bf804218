"""require_online: an unreachable server, a proxy or an offline switch fails in seconds, in one line."""
import socket
import time

import pytest

from dann.downloads import require_online
from dann.errors import UserError

HUB_URL = "https://huggingface.co/datasets/Mike0307/MNIST-M"


@pytest.fixture(autouse=True)
def no_proxy_no_offline(monkeypatch):
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY",
                 "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listening_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()  # the kernel completes connections into the backlog: no accept() needed
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def refused_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    return port


def test_refused_port_fails_fast_in_one_line(refused_port):
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        require_online("MNIST-M (Mike0307/MNIST-M)", f"https://127.0.0.1:{refused_port}/x", "copy it by hand")
    assert time.monotonic() - start < 2
    assert str(e.value) == (f"cannot download MNIST-M (Mike0307/MNIST-M) from 127.0.0.1: no connection "
                            f"(connection refused by 127.0.0.1:{refused_port}); copy it by hand")


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_switch_fails_without_touching_the_network(monkeypatch, switch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a))
    monkeypatch.setenv(switch, "1")
    with pytest.raises(UserError, match=rf"^cannot download MNIST-M from huggingface.co: offline mode "
                                        rf"\({switch}=1\); fix$"):
        require_online("MNIST-M", HUB_URL, "fix")
    assert calls == []


def test_offline_switch_is_only_for_the_hub(monkeypatch, listening_port):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    require_online("SVHN", f"http://127.0.0.1:{listening_port}/train_32x32.mat", "fix")


def test_listening_server_passes(listening_port):
    assert require_online("USPS", f"https://localhost:{listening_port}/usps.bz2", "fix") is None


def test_timeout_and_a_hanging_name_lookup_are_bounded(monkeypatch):
    def raise_timeout(*args, **kwargs):
        raise socket.timeout("timed out")
    monkeypatch.setattr(socket, "create_connection", raise_timeout)
    with pytest.raises(UserError, match=r"no connection \(timed out after 3 s\); fix$"):
        require_online("MNIST-M", HUB_URL, "fix")

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(5))  # a dead DNS server
    start = time.monotonic()
    with pytest.raises(UserError, match=r"no connection \(timed out after 0.2 s\)"):
        require_online("MNIST-M", HUB_URL, "fix", timeout=0.2)
    assert time.monotonic() - start < 2


def test_proxy_is_tested_instead_of_the_server(monkeypatch, listening_port, refused_port):
    # The server's name does not even resolve: only the proxy is contacted.
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listening_port}")
    require_online("MNIST-M", "https://no-such-host.invalid/x", "fix")

    monkeypatch.setenv("https_proxy", f"127.0.0.1:{refused_port}")
    with pytest.raises(UserError, match=rf"from huggingface.co: no connection to the proxy "
                                        rf"127.0.0.1:{refused_port} \(connection refused"):
        require_online("MNIST-M", HUB_URL, "fix")
