"""HTTP (stdlib; for the API and for measurements on the millisecond scale)."""

import http.client
import json
import time

from .common import PASSWORD, StepFailed


def request(method, url, body=None, headers=None, timeout=30):
    """One request on a new connection: (status, body, seconds)."""
    assert url.startswith("http://127.0.0.1:"), url
    rest = url[len("http://"):]
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request(method, "/" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t0
    finally:
        conn.close()


def wait_http(url, timeout=30, ok=(200,), proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StepFailed(f"{url}: the process serving it exited with {proc.returncode}")
        try:
            st, _, _ = request("GET", url, timeout=2)
            if st in ok:
                return
            last = f"status {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise StepFailed(f"{url} did not answer {ok} within {timeout}s ({last})")


class Api:
    """The manager's API, as one user of it."""

    def __init__(self, base):
        self.base = base

    def register(self, user):
        st, body, _ = request("POST", f"{self.base}/register",
                              json.dumps({"username": user, "password": PASSWORD}))
        if st not in (201, 409):
            raise StepFailed(f"register {user}: {st} {body[:200]!r}")

    def login(self, user):
        st, body, _ = request("POST", f"{self.base}/login",
                              json.dumps({"username": user, "password": PASSWORD}))
        if st != 200:
            raise StepFailed(f"login {user}: {st} {body[:200]!r}")
        return json.loads(body)["token"]

    def user(self, user):
        self.register(user)
        return self.login(user)

    def deploy(self, token, name, source):
        st, body, secs = request("POST", f"{self.base}/func?name={name}", source.encode(),
                                 {"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/typescript"}, timeout=120)
        if st not in (200, 201):
            raise StepFailed(f"deploy {name}: {st} {body[:300]!r}")
        return json.loads(body), secs
