"""The API client's proxy from the environment, resolved once per client (client-go's
http.ProxyFromEnvironment rules), instead of aiohttp's trust_env lookup on every request."""

from __future__ import annotations

import pytest

from controller.runtime.client import proxy_from_environment

SERVER = "https://api.example.com:6443"
PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        (SERVER, {}, None),
        (SERVER, {"HTTPS_PROXY": PROXY}, PROXY),
        (SERVER, {"https_proxy": PROXY}, PROXY),
        (SERVER, {"HTTP_PROXY": PROXY}, None),  # an https server takes HTTPS_PROXY only
        ("http://api.example.com", {"HTTP_PROXY": PROXY}, PROXY),
        (SERVER, {"HTTPS_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128"),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, None),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "api.example.com"}, None),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, None),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": ".example.com"}, None),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "*.example.com"}, None),
        ("https://example.com", {"HTTPS_PROXY": PROXY, "NO_PROXY": ".example.com"}, PROXY),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "ample.com"}, PROXY),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "other.org, api.example.com:6443"}, None),
        (SERVER, {"HTTPS_PROXY": PROXY, "NO_PROXY": "api.example.com:443"}, PROXY),
        ("https://10.1.2.3:6443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://10.1.2.3:6443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "192.168.0.0/16"}, PROXY),
        ("https://[fd00::1]:6443", {"HTTPS_PROXY": PROXY, "NO_PROXY": "fd00::/8"}, None),
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": PROXY}, None),  # loopback: never proxied
        ("https://localhost:6443", {"HTTPS_PROXY": PROXY}, None),
        ("https://[::1]:6443", {"HTTPS_PROXY": PROXY}, None),
    ],
)
def test_proxy_from_environment(url: str, environ: dict[str, str], expected: str | None) -> None:
    assert proxy_from_environment(url, environ) == expected
