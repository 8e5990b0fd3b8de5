"""The suite runs offline: outbound sockets are blocked, loopback is allowed, env is offline."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from pytest_socket import SocketBlockedError, SocketConnectBlockedError


def test_outbound_connections_are_blocked():
    with pytest.raises((SocketBlockedError, SocketConnectBlockedError)):
        socket.create_connection(("93.184.215.14", 80), timeout=1)


def test_loopback_servers_are_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def accept():
        conn, _ = server.accept()
        conn.sendall(b"ok")
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        assert client.recv(2) == b"ok"
    t.join()
    server.close()


def test_hub_libraries_are_offline():
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE"):
        assert os.environ[var] == "1"
    assert os.environ["YOLO_AUTOINSTALL"] == "false"


def test_milr_pytest_plugin_fixtures_are_registered(milr_sample_batch, milr_registry):
    images, prompts, metadata = milr_sample_batch
    assert len(images) == len(prompts) == len(metadata) == 4
    assert "color" in milr_registry.critics
